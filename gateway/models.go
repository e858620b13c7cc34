package gateway

import "strings"

// DefaultImageModel is the model of an Images API request that names none:
// the first of ordered (the config's models in file order) that a provider
// serves and whose name says image, else the first served.
func (g *Gateway) DefaultImageModel(ordered []string) string {
	if len(ordered) == 0 {
		ordered = g.router.Models()
	}
	first := ""
	for _, m := range ordered {
		if !g.router.Knows(m) {
			continue
		}
		if strings.Contains(m, "image") {
			return m
		}
		if first == "" {
			first = m
		}
	}
	return first
}
