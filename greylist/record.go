package greylist

import (
	"encoding/binary"
	"errors"
	"time"
)

// Records are stored in a small versioned binary encoding. The first byte is the
// record kind and version, so a future layout can coexist with this one and a value
// written by something else is recognised as such instead of being misread.
const (
	tripletV1 = 0x01 // kind|version | flags | first (int64 unix ns) | last (int64 unix ns)
	clientV1  = 0x81 // kind|version | count (uint32) | last (int64 unix ns)

	tripletV1Len = 1 + 1 + 8 + 8
	clientV1Len  = 1 + 4 + 8

	flagPassed = 0x01
)

var errBadRecord = errors.New("greylist: unknown or corrupt record")

// tripletRecord is the state of one triplet.
type tripletRecord struct {
	First  time.Time // first attempt of the current greylisting round
	Last   time.Time // last attempt recorded (written at most hourly once passed)
	Passed bool      // a retry came after the delay
}

// clientRecord is the auto-whitelist state of one client IP.
type clientRecord struct {
	Count int       // hours with at least one triplet passing greylisting
	Last  time.Time // last time the count was increased or the client was seen whitelisted
}

func encodeTriplet(r tripletRecord) []byte {
	b := make([]byte, tripletV1Len)
	b[0] = tripletV1
	if r.Passed {
		b[1] = flagPassed
	}
	binary.BigEndian.PutUint64(b[2:], uint64(r.First.UnixNano()))
	binary.BigEndian.PutUint64(b[10:], uint64(r.Last.UnixNano()))
	return b
}

func decodeTriplet(b []byte) (tripletRecord, error) {
	if len(b) != tripletV1Len || b[0] != tripletV1 || b[1]&^flagPassed != 0 {
		return tripletRecord{}, errBadRecord
	}
	return tripletRecord{
		Passed: b[1]&flagPassed != 0,
		First:  time.Unix(0, int64(binary.BigEndian.Uint64(b[2:]))),
		Last:   time.Unix(0, int64(binary.BigEndian.Uint64(b[10:]))),
	}, nil
}

func encodeClient(r clientRecord) []byte {
	b := make([]byte, clientV1Len)
	b[0] = clientV1
	n := r.Count
	if n < 0 {
		n = 0
	}
	if n > 1<<32-1 {
		n = 1<<32 - 1
	}
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	binary.BigEndian.PutUint64(b[5:], uint64(r.Last.UnixNano()))
	return b
}

func decodeClient(b []byte) (clientRecord, error) {
	if len(b) != clientV1Len || b[0] != clientV1 {
		return clientRecord{}, errBadRecord
	}
	return clientRecord{
		Count: int(binary.BigEndian.Uint32(b[1:])),
		Last:  time.Unix(0, int64(binary.BigEndian.Uint64(b[5:]))),
	}, nil
}
