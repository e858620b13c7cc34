package provider_test

import (
	"nanogate/openai"
	"nanogate/provider"
)

func init() { provider.ParseChatRequest = openai.ParseChatRequest }
