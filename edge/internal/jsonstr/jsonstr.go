// Package jsonstr reads strings out of raw, already validated JSON without copying them:
// the request-body checks (proxy) and the hold (hold) both walk the body's bytes and must not
// allocate for ordinary bodies.
package jsonstr

import (
	"bytes"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Text is the value of the JSON string s (raw and valid, quotes included), or "" when s is
// not a string, as gjson's Result.Str reads it. It aliases s unless s has escapes, which
// gjson decodes into a new string; an aliasing result must not outlive s.
func Text(s []byte) string {
	if len(s) < 2 || s[0] != '"' {
		return ""
	}
	if bytes.IndexByte(s, '\\') < 0 {
		return unsafe.String(&s[1], len(s)-2)
	}
	return gjson.Parse(View(s)).Str
}

// View is b as a string, not a copy: it must only be read while b is alive and unchanged.
func View(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
