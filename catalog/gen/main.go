// Command gen writes the embedded model catalogue's table into README.md,
// between the lines <!-- models:begin --> and <!-- models:end -->. Run it
// from the repository root after editing catalog/models.yaml:
//
//	go run ./catalog/gen
package main

import (
	"fmt"
	"os"

	"nanogate/catalog"
)

func main() {
	b, err := os.ReadFile("README.md")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	out, err := catalog.ReplaceTable(string(b), catalog.Default().MarkdownTable())
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	if err := os.WriteFile("README.md", []byte(out), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
