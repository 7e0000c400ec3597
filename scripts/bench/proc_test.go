package main

import (
	"os"
	"testing"
)

func TestVMHWM(t *testing.T) {
	hwm, ok := vmHWM(os.Getpid())
	if !ok || hwm <= 0 {
		t.Fatalf("vmHWM(self) = %d, %v; want a peak resident set", hwm, ok)
	}
	if _, ok := vmHWM(-1); ok {
		t.Error("vmHWM of no process: ok")
	}
}
