// Package deploy holds Tollgate's production configuration files. The Go files here only embed
// the defaults that the binaries fall back to, so the file an operator edits and the default
// compiled into the binary are the same file.
package deploy
