package state

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// StepStatus is the outcome recorded for a step.
type StepStatus string

// The step statuses.
const (
	StepStarted StepStatus = "started"
	StepDone    StepStatus = "done"
	StepFailed  StepStatus = "failed"
	StepSkipped StepStatus = "skipped"
)

func (s StepStatus) valid() bool {
	return s == StepStarted || s == StepDone || s == StepFailed || s == StepSkipped
}

// JournalEntry is one record of the step journal. The journal is append
// only: a step's later entries supersede its earlier ones.
type JournalEntry struct {
	// Seq is the entry's position in the journal, from 1; set by
	// AppendJournal.
	Seq uint64 `json:"-"`
	// Node is the node the step ran on; empty for a cluster-wide step.
	Node string `json:"node,omitempty"`
	// Step names the step, e.g. "containerd/apply" or "kubeadm/join".
	Step string `json:"step"`
	// Status is what happened.
	Status StepStatus `json:"status"`
	// Time is when it happened; AppendJournal sets it if zero.
	Time time.Time `json:"time"`
	// Message is an optional human note, such as an error. Never a secret.
	Message string `json:"message,omitempty"`
}

// StepKey identifies a step on a node.
type StepKey struct {
	Node, Step string
}

// Key returns the entry's step key.
func (e JournalEntry) Key() StepKey { return StepKey{Node: e.Node, Step: e.Step} }

// AppendJournal appends e to the journal and returns its sequence number.
// The entry is on disk when AppendJournal returns.
func (s *Store) AppendJournal(ctx context.Context, e JournalEntry) (uint64, error) {
	if e.Step == "" {
		return 0, fmt.Errorf("append journal: %w: entry without a step", ErrInvalid)
	}
	if !e.Status.valid() {
		return 0, fmt.Errorf("append journal: %w: step %s: unknown status %q", ErrInvalid, e.Step, e.Status)
	}
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	e.Time = e.Time.UTC()
	data, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("encode journal entry: %w", err)
	}
	var seq uint64
	err = s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJournal)
		var err error
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		return b.Put(seqKey(seq), data)
	})
	if err != nil {
		return 0, fmt.Errorf("append journal: %w", err)
	}
	return seq, nil
}

// Journal returns every journal entry in order.
func (s *Store) Journal(ctx context.Context) ([]JournalEntry, error) {
	var out []JournalEntry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJournal).ForEach(func(k, v []byte) error {
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return out, nil
}

// LastSteps returns the latest entry of every (node, step), ordered by
// sequence: what a resumed run needs to skip what is done and retry what
// failed or was cut off while started.
func (s *Store) LastSteps(ctx context.Context) ([]JournalEntry, error) {
	all, err := s.Journal(ctx)
	if err != nil {
		return nil, err
	}
	last := make(map[StepKey]int, len(all))
	for i, e := range all {
		last[e.Key()] = i
	}
	out := make([]JournalEntry, 0, len(last))
	for i, e := range all {
		if last[e.Key()] == i {
			out = append(out, e)
		}
	}
	return out, nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

func decodeEntry(k, v []byte) (JournalEntry, error) {
	var e JournalEntry
	if len(k) != 8 {
		return e, fmt.Errorf("journal key %x is not a sequence number", k)
	}
	if err := json.Unmarshal(v, &e); err != nil {
		return e, fmt.Errorf("decode journal entry %d: %w", binary.BigEndian.Uint64(k), err)
	}
	e.Seq = binary.BigEndian.Uint64(k)
	return e, nil
}
