package main

import (
	"bytes"
	"testing"
)

func TestSplitMessage(t *testing.T) {
	hs, body, err := splitMessage([]byte("From: a@example.com\r\nSubject: one\r\n\ttwo\r\n\r\nline1\nline2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[1] != (header{"Subject", " one\n\ttwo"}) {
		t.Errorf("headers %q", hs)
	}
	if string(body) != "line1\r\nline2\r\n" {
		t.Errorf("body %q", body)
	}
	if _, _, err := splitMessage([]byte("no blank line")); err == nil {
		t.Error("accepted a message without a blank line")
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string][2]string{
		"inet:127.0.0.1:8892":   {"tcp", "127.0.0.1:8892"},
		"unix:/run/milter.sock": {"unix", "/run/milter.sock"},
	} {
		n, a, err := parseAddr(in)
		if err != nil || n != want[0] || a != want[1] {
			t.Errorf("parseAddr(%q) = %q %q %v", in, n, a, err)
		}
	}
	if _, _, err := parseAddr("127.0.0.1:8892"); err == nil {
		t.Error("accepted an address without a transport")
	}
}

func TestMakeMessageSize(t *testing.T) {
	m := makeMessage("alice@example.com", 2048)
	if len(m) > 2048 || len(m) < 1900 || !bytes.Contains(m, []byte("From: Load Test <alice@example.com>")) {
		t.Errorf("message of %d bytes:\n%s", len(m), m)
	}
}

func FuzzSplitMessage(f *testing.F) {
	f.Add([]byte("From: a@example.com\r\n\r\nbody\r\n"))
	f.Add([]byte("A:b\n c\n\n"))
	f.Add([]byte(" leading\n\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		hs, body, err := splitMessage(msg)
		if err != nil {
			return
		}
		if bytes.Contains(bytes.ReplaceAll(body, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bare LF left in body %q", body)
		}
		for _, h := range hs {
			if bytes.ContainsRune([]byte(h.name), '\n') {
				t.Fatalf("LF in header name %q", h.name)
			}
		}
	})
}
