// Package commalist splits the comma-separated lists of environment
// variables and flags (RABBITMQ_URL, MYXI_ALLOWED_ORIGINS, ...): the one
// place that rule lives.
package commalist

import "strings"

// Split returns the items of a comma-separated list, each trimmed, blanks
// dropped; nil for an empty list.
func Split(list string) []string {
	var items []string
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}
