package milter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
)

func TestReadPacketZeroLength(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()

	go func() {
		c1.Write([]byte{0, 0, 0, 0}) // length = 0
		c1.Close()
	}()

	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("readPacket panicked on zero-length packet: %v", r)
		}
	}()
	if _, err := readPacket(c2, 0); err == nil {
		t.Fatal("expected an error for zero-length packet")
	}
}

func TestReadPacketOversize(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()

	go func() {
		binary.Write(c1, binary.BigEndian, uint32(maxPacketSize+1))
		c1.Close()
	}()

	want := fmt.Sprintf("milter: packet length %d exceeds %d bytes", maxPacketSize+1, maxPacketSize)
	if _, err := readPacket(c2, 0); err == nil || err.Error() != want {
		t.Fatalf("Expected packet length error %q, got %v", want, err)
	}
}

func TestReadPacketSizeBoundary(t *testing.T) {
	for _, size := range []int{1, maxPacketSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c1, c2 := net.Pipe()
			defer c1.Close()
			defer c2.Close()

			msg := &Message{Code: byte(CodeBody), Data: bytes.Repeat([]byte{'A'}, size-1)}
			writeErr := make(chan error, 1)
			go func() {
				writeErr <- writePacket(c1, msg, 0)
			}()

			got, err := readPacket(c2, 0)
			if err != nil {
				t.Fatal("Unexpected error:", err)
			}
			if err := <-writeErr; err != nil {
				t.Fatal("Unexpected write error:", err)
			}
			if got.Code != msg.Code || !bytes.Equal(got.Data, msg.Data) {
				t.Fatal("Packet content changed")
			}
		})
	}
}

// A session reads packets up to maxReusedPacketSize into one buffer, so a
// large message's body chunks cost no allocation each; larger packets get
// their own buffer, which the session does not keep.
func TestReadPacketIntoReusesBuffer(t *testing.T) {
	sizes := []int{10, 65536, 300, 65536, maxReusedPacketSize, maxReusedPacketSize + 1, 65536}
	var stream bytes.Buffer
	for i, size := range sizes {
		data := bytes.Repeat([]byte{byte('a' + i)}, size-1)
		if err := writePacket(&bufConn{w: &stream}, &Message{Code: byte(CodeBody), Data: data}, 0); err != nil {
			t.Fatal(err)
		}
	}
	conn := &bufConn{r: &stream}
	var buf []byte
	for i, size := range sizes {
		fits := size <= cap(buf)
		var old *byte
		if fits {
			old = &buf[:1][0]
		}
		msg, err := readPacketInto(conn, 0, &buf)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Code != byte(CodeBody) || !bytes.Equal(msg.Data, bytes.Repeat([]byte{byte('a' + i)}, size-1)) {
			t.Fatalf("packet %d (%d bytes): content changed", i, size)
		}
		inBuf := len(buf) > 1 && &buf[1] == &msg.Data[0]
		if want := size <= maxReusedPacketSize; inBuf != want {
			t.Errorf("packet %d (%d bytes): read into the session buffer = %v, want %v", i, size, inBuf, want)
		}
		if fits && &buf[:1][0] != old {
			t.Errorf("packet %d (%d bytes) fit the session buffer, but it was replaced", i, size)
		}
	}
	if _, err := readPacketInto(conn, 0, &buf); err != io.EOF {
		t.Fatalf("after the last packet: %v, want EOF", err)
	}
}

// bufConn is a net.Conn reading from r and writing to w.
type bufConn struct {
	net.Conn
	r io.Reader
	w io.Writer
}

func (c *bufConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *bufConn) Write(p []byte) (int, error) { return c.w.Write(p) }
