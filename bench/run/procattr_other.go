//go:build !linux

package main

import "syscall"

// dieWithParent has no Pdeathsig outside Linux: children of a harness that
// dies are left running and proc.stop ends them on every orderly exit.
func dieWithParent() *syscall.SysProcAttr { return nil }
