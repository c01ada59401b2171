// Command checkversions fails when two workspace modules require different versions of the
// same dependency, so every service builds against exactly what the others do.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/mod/modfile"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: checkversions MODULE_DIR...")
		os.Exit(2)
	}
	seen := map[string]map[string][]string{} // path -> version -> modules
	for _, dir := range os.Args[1:] {
		name := filepath.Join(dir, "go.mod")
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		f, err := modfile.Parse(name, b, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, r := range f.Require {
			if seen[r.Mod.Path] == nil {
				seen[r.Mod.Path] = map[string][]string{}
			}
			seen[r.Mod.Path][r.Mod.Version] = append(seen[r.Mod.Path][r.Mod.Version], dir)
		}
	}
	var bad []string
	for path, versions := range seen {
		if len(versions) > 1 {
			msg := path + ":"
			for v, mods := range versions {
				msg += fmt.Sprintf(" %s in %v;", v, mods)
			}
			bad = append(bad, msg)
		}
	}
	sort.Strings(bad)
	for _, b := range bad {
		fmt.Fprintln(os.Stderr, "version mismatch:", b)
	}
	if len(bad) > 0 {
		os.Exit(1)
	}
	fmt.Printf("check-versions: %d modules agree on %d dependencies\n", len(os.Args)-1, len(seen))
}
