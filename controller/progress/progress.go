// Package progress reports what a long-running verb is doing, per node and
// step: as plain lines (logs, pipes), as a live per-node board on a
// terminal, or as JSON events for machines.
package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Status of a step.
type Status string

// Step statuses.
const (
	Started Status = "started"
	Done    Status = "done"
	Changed Status = "changed"
	Skipped Status = "skipped"
	Failed  Status = "failed"
	Info    Status = "info"
)

// Event is one thing that happened. Node is empty for cluster-wide steps.
type Event struct {
	Time     time.Time     `json:"time"`
	Node     string        `json:"node,omitempty"`
	Step     string        `json:"step"`
	Status   Status        `json:"status"`
	Message  string        `json:"message,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`
}

// Sink receives events; implementations are safe for concurrent use.
type Sink interface {
	Emit(Event)
	// Close flushes what the sink holds.
	Close() error
}

// Discard drops every event.
type Discard struct{}

// Emit implements Sink.
func (Discard) Emit(Event) {}

// Close implements Sink.
func (Discard) Close() error { return nil }

// Plain writes one line per event: "  12.3s cp-1       connect   done (0.4s)".
type Plain struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

// NewPlain returns a plain-line sink writing to w.
func NewPlain(w io.Writer) *Plain {
	return &Plain{w: w, start: time.Now()}
}

// Emit implements Sink.
func (p *Plain) Emit(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, formatLine(e, e.Time.Sub(p.start)))
}

// Close implements Sink.
func (p *Plain) Close() error { return nil }

func formatLine(e Event, at time.Duration) string {
	node := e.Node
	if node == "" {
		node = "*"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs %-12s %-14s %s", at.Seconds(), node, e.Step, e.Status)
	if e.Duration > 0 {
		fmt.Fprintf(&b, " (%s)", roundDuration(e.Duration))
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}

// JSON writes one JSON object per event and line.
type JSON struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewJSON returns a JSON-lines sink writing to w.
func NewJSON(w io.Writer) *JSON { return &JSON{enc: json.NewEncoder(w)} }

// Emit implements Sink.
func (j *JSON) Emit(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	_ = j.enc.Encode(e)
}

// Close implements Sink.
func (j *JSON) Close() error { return nil }

// Board keeps one line per node on a terminal, redrawn as steps change, with
// cluster-wide events printed above it. Failures stay on screen.
type Board struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	order []string
	rows  map[string]Event
	drawn int
}

// NewBoard returns a terminal board writing ANSI sequences to w.
func NewBoard(w io.Writer) *Board {
	return &Board{w: w, start: time.Now(), rows: map[string]Event{}}
}

// Emit implements Sink.
func (b *Board) Emit(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clear()
	if e.Node == "" || e.Status == Failed {
		fmt.Fprintln(b.w, formatLine(e, e.Time.Sub(b.start)))
	}
	if e.Node != "" {
		if _, ok := b.rows[e.Node]; !ok {
			b.order = append(b.order, e.Node)
			sort.Strings(b.order)
		}
		b.rows[e.Node] = e
	}
	b.draw()
}

func (b *Board) clear() {
	for i := 0; i < b.drawn; i++ {
		fmt.Fprint(b.w, "\x1b[1A\x1b[2K")
	}
	b.drawn = 0
}

func (b *Board) draw() {
	for _, n := range b.order {
		e := b.rows[n]
		fmt.Fprintln(b.w, formatLine(e, e.Time.Sub(b.start)))
		b.drawn++
	}
}

// Close leaves the last board on screen.
func (b *Board) Close() error { return nil }
