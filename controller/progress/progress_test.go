package progress

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestPlain(t *testing.T) {
	var b bytes.Buffer
	p := NewPlain(&b)
	p.start = t0
	p.Emit(Event{Time: t0.Add(1500 * time.Millisecond), Node: "cp-1", Step: "connect", Status: Done, Duration: 412345678})
	p.Emit(Event{Time: t0.Add(12340 * time.Millisecond), Step: "plan", Status: Info, Message: "3 nodes"})
	p.Emit(Event{Time: t0.Add(75 * time.Second), Node: "worker-1", Step: "containerd", Status: Failed, Message: "apt: exit status 100", Duration: 12345678901})
	want := "" +
		"   1.5s cp-1         connect        done (412ms)\n" +
		"  12.3s *            plan           info: 3 nodes\n" +
		"  75.0s worker-1     containerd     failed (12.3s): apt: exit status 100\n"
	if b.String() != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestJSON(t *testing.T) {
	var b bytes.Buffer
	j := NewJSON(&b)
	e := Event{Time: t0, Node: "cp-1", Step: "connect", Status: Changed, Duration: time.Second}
	j.Emit(e)
	j.Emit(Event{Time: t0, Step: "plan", Status: Started})
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	if want := `{"time":"2026-01-02T03:04:05Z","node":"cp-1","step":"connect","status":"changed","duration_ns":1000000000}`; lines[0] != want {
		t.Errorf("line 1 = %s\nwant     %s", lines[0], want)
	}
	var got Event
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil || got != e {
		t.Errorf("decoded %+v, %v; want %+v", got, err, e)
	}
	if want := `{"time":"2026-01-02T03:04:05Z","step":"plan","status":"started"}`; lines[1] != want {
		t.Errorf("line 2 = %s\nwant     %s", lines[1], want)
	}
}

// The board redraws one line per node, sorted by name, below the cluster-wide events and
// the failures, which stay printed.
func TestBoard(t *testing.T) {
	var b bytes.Buffer
	bd := NewBoard(&b)
	bd.start = t0
	const up = "\x1b[1A\x1b[2K"
	bd.Emit(Event{Time: t0.Add(time.Second), Node: "w-1", Step: "connect", Status: Started})
	bd.Emit(Event{Time: t0.Add(2 * time.Second), Node: "cp-1", Step: "connect", Status: Started})
	bd.Emit(Event{Time: t0.Add(3 * time.Second), Step: "plan", Status: Info, Message: "2 nodes"})
	bd.Emit(Event{Time: t0.Add(4 * time.Second), Node: "w-1", Step: "connect", Status: Failed, Message: "refused"})
	w1 := "   1.0s w-1          connect        started\n"
	cp1 := "   2.0s cp-1         connect        started\n"
	plan := "   3.0s *            plan           info: 2 nodes\n"
	w1f := "   4.0s w-1          connect        failed: refused\n"
	want := w1 +
		up + cp1 + w1 +
		up + up + plan + cp1 + w1 +
		up + up + w1f + cp1 + w1f
	if b.String() != want {
		t.Errorf("board output:\n%q\nwant:\n%q", b.String(), want)
	}
}
