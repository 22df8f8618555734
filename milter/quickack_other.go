//go:build !linux

package milter

import "net"

// quickAck is Linux-only (TCP_QUICKACK); see quickack_linux.go.
func quickAck(net.Conn) {}
