package etcdsnap

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

func TestTrailerHash(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 10, 31, 32, 33, 512, 1024 + 32, 4096*3 + 32, 100000} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if size >= 32 {
			s := sha256.Sum256(data[:size-32])
			copy(data[size-32:], s[:])
		}
		th := NewTrailerHash()
		// Odd write sizes, including ones smaller than the trailer.
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+r.IntN(70))
			th.Write(rest[:n])
			rest = rest[n:]
		}
		if th.total != int64(size) {
			t.Fatalf("size %d: total %d", size, th.total)
		}
		if size >= 32 && !bytes.Equal(th.h.Sum(nil), data[size-32:]) {
			t.Errorf("size %d: hash of the content differs", size)
		}
		err := th.Check("x")
		if want := size%512 == 32; (err == nil) != want {
			t.Errorf("size %d: check %v", size, err)
		}
	}
}
