// Package layers holds a test, and only a test, of the module's dependency
// structure: every package belongs to a layer, and imports packages of its
// own layer or of lower ones only, so that a change low down never has to
// know about the code above it. Lowest first:
//
//	L0 leaves              nanogate/internal/..., catalog, metrics, telemetry
//	L1 configuration       config
//	L2 stores, mechanisms  auth, upstream, ratelimit, accounting, images,
//	                       images/signatures
//	L3 providers           provider: each provider's API, spoken upstream
//	L4 routing             router: which provider serves, failover, health
//	L5 the journey         gateway: a request from admission to its record
//	L6 the client's format openai: the OpenAI wire format clients speak
//	L7 front ends          proxy (HTTP), batch (the Batches API), dashboard
//	L8 wiring, harnesses   nanogate (main), e2e, compat/..., bench/...,
//	                       catalog/gen, internal/fakeup/cmd/..., deploy
//
// The test helpers internal/fakeup, internal/gwtest and internal/redistest
// are leaves, but only tests and L8 may import them: a fake upstream or a
// Redis launcher has no place in the gateway's binary.
//
// A new package fails the test until it is given a layer in the table of
// layers_test.go.
package layers
