// Package fanout runs one function per item in parallel under a concurrency
// limit. Every item gets its own outcome; one failure never stops the others.
package fanout

import (
	"context"
	"sync"
)

// Outcome is the result of one item.
type Outcome[T any] struct {
	Index int
	Value T
	Err   error
}

// Each calls fn for i in [0, n) with at most limit calls running at once
// (limit <= 0 means n) and returns the outcomes in index order. Items not yet
// started when ctx is done get ctx's error.
func Each[T any](ctx context.Context, n, limit int, fn func(ctx context.Context, i int) (T, error)) []Outcome[T] {
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]Outcome[T], n)
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		out[i].Index = i
		if err := ctx.Err(); err != nil {
			out[i].Err = err
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			out[i].Err = ctx.Err()
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			out[i].Value, out[i].Err = fn(ctx, i)
		}(i)
	}
	wg.Wait()
	return out
}
