package testhost

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestFreePortCanBeListenedOn(t *testing.T) {
	port := FreePort(t)
	if port <= 0 || port > 65535 {
		t.Fatalf("port %d", port)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("the port FreePort returned is not free: %v", err)
	}
	l.Close()
}

func TestLoadAvg(t *testing.T) {
	got := LoadAvg()
	if got == "?" {
		t.Skip("no /proc/loadavg here")
	}
	f := strings.Fields(got)
	if len(f) != 3 {
		t.Fatalf("LoadAvg = %q, want three numbers", got)
	}
	for _, v := range f {
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			t.Errorf("LoadAvg = %q: %q is not a number", got, v)
		}
	}
}
