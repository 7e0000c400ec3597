package main

import (
	"os"
	"slices"
	"testing"
	"time"
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

func TestMedian(t *testing.T) {
	if got := median([]int64{5, 1, 3}); got != 3 {
		t.Errorf("median(5, 1, 3) = %d, want 3", got)
	}
	if got := median(durations{4, 1, 3, 2}); got != 2 {
		t.Errorf("median(4, 1, 3, 2) = %d, want 2 (the mean of 2 and 3, truncated)", got)
	}
	if got := median([]float64{0.5, 2, 1, 4}); got != 1.5 {
		t.Errorf("median(0.5, 2, 1, 4) = %v, want 1.5", got)
	}
	if got := median([]int64(nil)); got != 0 {
		t.Errorf("median() = %d, want 0", got)
	}
	in := []int64{3, 1, 2}
	median(in)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Errorf("median sorted its argument: %v", in)
	}
}

func TestBelow(t *testing.T) {
	// 1 ─ 10 ─ 100
	//   └ 11
	// 2 ─ 20        (not below the roots)
	procs := []procInfo{
		{pid: 1}, {pid: 10, ppid: 1}, {pid: 100, ppid: 10}, {pid: 11, ppid: 1},
		{pid: 2}, {pid: 20, ppid: 2},
	}
	var got []int
	for _, p := range below(procs, []int{1, 10, 99}) {
		got = append(got, p.pid)
	}
	slices.Sort(got)
	if want := []int{1, 10, 11, 100}; !slices.Equal(got, want) {
		t.Errorf("below(1, 10, 99) = %v, want %v (each once; 99 is gone)", got, want)
	}
}

// TestTreeCPU checks treeCPU on a real process tree: the CPU this test's
// process spends shows in its own tree.
func TestTreeCPU(t *testing.T) {
	pid := os.Getpid()
	before := treeCPU([]int{pid})
	// Busy until a tick (10 ms of CPU) shows, on a loaded machine too.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if treeCPU([]int{pid}) > before {
			return
		}
	}
	t.Errorf("treeCPU stayed at %s over 10 s of busy work", before)
}
