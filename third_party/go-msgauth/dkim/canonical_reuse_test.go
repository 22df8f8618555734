package dkim

import (
	"bytes"
	"io"
	"math/rand"
	"testing"
)

// canonicalBody canonicalizes body written in pieces cut at cuts.
func canonicalBody(t *testing.T, can Canonicalization, body []byte, cuts []int) string {
	t.Helper()
	var out bytes.Buffer
	wc := canonicalizers[can].CanonicalizeBody(&out)
	prev := 0
	for _, cut := range append(cuts, len(body)) {
		if _, err := wc.Write(body[prev:cut]); err != nil {
			t.Fatal(err)
		}
		prev = cut
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// The body canonicalizers reuse their buffers from one Write to the next: a
// body written in any pieces must come out as it does written whole. The
// bodies are made of the bytes canonicalization cares about, so pieces end in
// the middle of CRLFs, whitespace runs and trailing empty lines.
func TestCanonicalizeBodyInPieces(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("ab \t\r\n\n\r\n")
	for _, can := range []Canonicalization{CanonicalizationSimple, CanonicalizationRelaxed} {
		for i := 0; i < 200; i++ {
			body := make([]byte, rng.Intn(3000))
			for j := range body {
				body[j] = alphabet[rng.Intn(len(alphabet))]
			}
			whole := canonicalBody(t, can, body, nil)
			var cuts []int
			for pos := 0; pos < len(body); {
				pos += 1 + rng.Intn(1+rng.Intn(600))
				if pos < len(body) {
					cuts = append(cuts, pos)
				}
			}
			if got := canonicalBody(t, can, body, cuts); got != whole {
				t.Fatalf("%s, body %q cut at %v:\ngot  %q\nwant %q", can, body, cuts, got, whole)
			}
		}
	}
}

// A large body written in pieces costs the same few allocations as a small
// one: the buffers grow on the first Write and are reused after.
func TestCanonicalizeBodyReusesBuffers(t *testing.T) {
	piece := bytes.Repeat([]byte("a line with  trailing space \t\nand a CRLF one\r\n"), 80)
	for _, can := range []Canonicalization{CanonicalizationSimple, CanonicalizationRelaxed} {
		allocs := func(writes int) float64 {
			return testing.AllocsPerRun(5, func() {
				wc := canonicalizers[can].CanonicalizeBody(io.Discard)
				for i := 0; i < writes; i++ {
					wc.Write(piece)
				}
				wc.Close()
			})
		}
		if few, many := allocs(2), allocs(1000); many > few {
			t.Errorf("%s: %.0f allocations for 2 writes, %.0f for 1000", can, few, many)
		}
	}
}
