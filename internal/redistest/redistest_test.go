package redistest

import "testing"

func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	if !s.Alive() {
		t.Fatal("server does not answer after Start")
	}
	s.Kill()
	if s.Alive() {
		t.Fatal("server still answers after Kill")
	}
	s.Restart()
	if !s.Alive() {
		t.Fatal("server does not answer after Restart")
	}
}
