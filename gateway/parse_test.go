package gateway

import "nanogate/provider"

// ParseChatRequest parses a client's chat body for this package's tests.
// Package openai owns the parser and imports this package, so only an
// external test file can reach it: parse_ext_test.go sets this.
var ParseChatRequest func(body []byte) (*provider.ChatRequest, error)
