package proxmox

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff is the retry policy for operations that contend for Proxmox locks
// (clones): exponential with full jitter, capped, for a bounded number of
// attempts.
type Backoff struct {
	// Initial is the first window; attempt n waits a random duration in
	// [Initial*2^n/2, Initial*2^n), capped at Max.
	Initial time.Duration
	// Max caps the window.
	Max time.Duration
	// Attempts is the number of tries, the first included.
	Attempts int
	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64
}

// DefaultBackoff retries a contended clone for about five minutes.
var DefaultBackoff = Backoff{Initial: 2 * time.Second, Max: 30 * time.Second, Attempts: 12}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	if b.Attempts <= 0 {
		b.Attempts = DefaultBackoff.Attempts
	}
	return b
}

// Delay is the wait after failed attempt n (0-based): half the window fixed,
// half random, so parallel clients spread out but every wait grows.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	w := b.Initial
	for i := 0; i < n && w < b.Max; i++ {
		w *= 2
	}
	w = min(w, b.Max)
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	return w/2 + time.Duration(r()*float64(w/2))
}

// Retry calls fn until it succeeds, returns an error retryable does not
// accept, or the attempts are used up; it waits Delay(n) on clock between
// attempts. It returns the last error and the number of retries taken.
func (b Backoff) Retry(ctx context.Context, clock Clock, retryable func(error) bool, fn func(attempt int) error) (int, error) {
	b = b.withDefaults()
	var err error
	for n := 0; n < b.Attempts; n++ {
		if err = fn(n); err == nil || !retryable(err) {
			return n, err
		}
		if n == b.Attempts-1 {
			break
		}
		if serr := clock.Sleep(ctx, b.Delay(n)); serr != nil {
			return n, err
		}
	}
	return b.Attempts - 1, err
}

// limiter bounds concurrent work per key (a Proxmox node and storage).
type limiter struct {
	n    int
	mu   sync.Mutex
	sems map[string]chan struct{}
}

func newLimiter(n int) *limiter {
	return &limiter{n: max(n, 1), sems: map[string]chan struct{}{}}
}

// acquire waits for a slot of key; release it with the returned function.
func (l *limiter) acquire(ctx context.Context, key string) (func(), error) {
	l.mu.Lock()
	sem, ok := l.sems[key]
	if !ok {
		sem = make(chan struct{}, l.n)
		l.sems[key] = sem
	}
	l.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
