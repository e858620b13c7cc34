package e2e

import (
	"os"
	"testing"

	"nanogate/internal/gwtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	gwtest.Cleanup() // the binary the tests built
	os.Exit(code)
}
