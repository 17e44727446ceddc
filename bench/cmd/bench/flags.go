package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// parseFlags parses args into fs after taking defaults from the environment: flag -foo-bar
// reads PREFIX_FOO_BAR. Flags given on the command line win over the environment.
func parseFlags(fs *flag.FlagSet, envPrefix string, args []string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		f.Usage += " (env " + name + ")"
		if v, ok := os.LookupEnv(name); ok && err == nil {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("env %s: %w", name, serr)
			}
		}
	})
	if err != nil {
		return err
	}
	return fs.Parse(args)
}
