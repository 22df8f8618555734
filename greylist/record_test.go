package greylist

import (
	"bytes"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	first := time.Date(2025, 3, 1, 12, 0, 0, 123, time.UTC)
	for _, r := range []tripletRecord{
		{First: first, Last: first},
		{First: first, Last: first.Add(time.Hour), Passed: true},
	} {
		got, err := decodeTriplet(encodeTriplet(r))
		if err != nil || !got.First.Equal(r.First) || !got.Last.Equal(r.Last) || got.Passed != r.Passed {
			t.Errorf("triplet %+v: got %+v, %v", r, got, err)
		}
	}
	c := clientRecord{Count: 7, Last: first}
	got, err := decodeClient(encodeClient(c))
	if err != nil || got.Count != 7 || !got.Last.Equal(first) {
		t.Errorf("client: got %+v, %v", got, err)
	}
	// A record of one kind is not accepted as the other, nor truncated or padded.
	bad := [][]byte{nil, {}, encodeClient(c), encodeTriplet(tripletRecord{})[:17], append(encodeTriplet(tripletRecord{}), 0), {0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	for _, b := range bad {
		if _, err := decodeTriplet(b); err == nil {
			t.Errorf("decodeTriplet(%x) accepted", b)
		}
	}
	if _, err := decodeClient(encodeTriplet(tripletRecord{})); err == nil {
		t.Error("decodeClient accepted a triplet record")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	now := time.Unix(1700000000, 5)
	f.Add(encodeTriplet(tripletRecord{First: now, Last: now, Passed: true}))
	f.Add(encodeTriplet(tripletRecord{First: now, Last: now}))
	f.Add(encodeClient(clientRecord{Count: 5, Last: now}))
	f.Add([]byte("1700000000,1700000300")) // a postgrey value
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeTriplet(b); err == nil {
			if !bytes.Equal(encodeTriplet(r), b) {
				t.Fatalf("triplet %x decodes to %+v which encodes differently", b, r)
			}
		}
		if r, err := decodeClient(b); err == nil {
			if !bytes.Equal(encodeClient(r), b) {
				t.Fatalf("client %x decodes to %+v which encodes differently", b, r)
			}
		}
	})
}
