package main

import "syscall"

// dieWithParent has the kernel kill a child when the harness dies, so that an
// interrupted run leaves no gateway or upstream holding its ports.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
