package gateway_test

import (
	"nanogate/gateway"
	"nanogate/openai"
)

func init() { gateway.ParseChatRequest = openai.ParseChatRequest }
