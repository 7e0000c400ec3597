package proxmox

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 8 * time.Second, Attempts: 10}
	for _, tt := range []struct {
		n        int
		r        float64
		min, max time.Duration
	}{
		{0, 0, 500 * time.Millisecond, 500 * time.Millisecond},
		{0, 0.999, 500 * time.Millisecond, time.Second},
		{1, 0, time.Second, time.Second},
		{2, 0.5, 3 * time.Second, 3 * time.Second},
		{3, 0, 4 * time.Second, 4 * time.Second},
		{9, 0.999, 4 * time.Second, 8 * time.Second}, // capped
	} {
		b.Rand = func() float64 { return tt.r }
		d := b.Delay(tt.n)
		if d < tt.min || d > tt.max {
			t.Errorf("Delay(%d) with rand %v = %s, want in [%s, %s]", tt.n, tt.r, d, tt.min, tt.max)
		}
	}
}

func TestBackoffDefaults(t *testing.T) {
	var b Backoff
	b = b.withDefaults()
	if b.Initial != DefaultBackoff.Initial || b.Max != DefaultBackoff.Max || b.Attempts != DefaultBackoff.Attempts {
		t.Fatalf("withDefaults = %+v", b)
	}
}

var errContended = errors.New("can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout")

func TestRetryUntilSuccess(t *testing.T) {
	clock := newFakeClock()
	b := Backoff{Initial: time.Second, Max: 4 * time.Second, Attempts: 6, Rand: func() float64 { return 0 }}
	calls := 0
	retries, err := b.Retry(context.Background(), clock, isLockContention, func(attempt int) error {
		if attempt != calls {
			t.Errorf("attempt %d, want %d", attempt, calls)
		}
		calls++
		if calls < 4 {
			return errContended
		}
		return nil
	})
	if err != nil || retries != 3 || calls != 4 {
		t.Fatalf("Retry = %d, %v after %d calls; want 3 retries, nil, 4 calls", retries, err, calls)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}
	if got := clock.slept(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("slept %v, want %v", got, want)
	}
}

func TestRetryStopsOnOtherErrors(t *testing.T) {
	clock := newFakeClock()
	fatal := errors.New("403 Permission check failed")
	calls := 0
	_, err := DefaultBackoff.Retry(context.Background(), clock, isLockContention, func(int) error {
		calls++
		return fatal
	})
	if !errors.Is(err, fatal) || calls != 1 || len(clock.slept()) != 0 {
		t.Fatalf("err %v after %d calls and sleeps %v; want the error at once", err, calls, clock.slept())
	}
}

func TestRetryGivesUp(t *testing.T) {
	clock := newFakeClock()
	b := Backoff{Initial: time.Second, Max: 2 * time.Second, Attempts: 3}
	calls := 0
	retries, err := b.Retry(context.Background(), clock, isLockContention, func(int) error {
		calls++
		return errContended
	})
	if !errors.Is(err, errContended) || calls != 3 || retries != 2 || len(clock.slept()) != 2 {
		t.Fatalf("Retry = %d, %v after %d calls, sleeps %v; want 2 retries, the last error, 3 calls, 2 sleeps", retries, err, calls, clock.slept())
	}
}

func TestRetryCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clock := newFakeClock()
	calls := 0
	_, err := DefaultBackoff.Retry(ctx, clock, isLockContention, func(int) error {
		calls++
		cancel()
		return errContended
	})
	if err == nil || calls != 1 {
		t.Fatalf("err %v after %d calls; want the error after one call", err, calls)
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter(2)
	ctx := context.Background()
	r1, _ := l.acquire(ctx, "pve1/local-lvm")
	r2, _ := l.acquire(ctx, "pve1/local-lvm")
	// Another key has its own slots.
	r3, err := l.acquire(ctx, "pve1/ceph")
	if err != nil {
		t.Fatal(err)
	}
	r3()
	// The key is full: a third acquire waits until the context ends. (A
	// context live when acquire starts: with one already done, select
	// could pick a free slot or Done at random.)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := l.acquire(short, "pve1/local-lvm"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on a full key: %v; want it to wait until the deadline", err)
	}
	r1()
	r4, err := l.acquire(ctx, "pve1/local-lvm")
	if err != nil {
		t.Fatal(err)
	}
	r2()
	r4()
}
