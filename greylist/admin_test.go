package greylist

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestSweepExpiry(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 5
	g := New(openTestBolt(t, ""), cfg, nil, clock.Now)

	passTriplet(t, g, clock, "192.0.2.10", 1) // passed, AWL count 1
	pending := Input{ClientIP: netip.MustParseAddr("198.51.100.1"), Sender: "p@x.example", Recipient: "r@y.example"}
	g.Check(ctx, pending)

	clock.Advance(48 * time.Hour)
	if res, err := g.Sweep(ctx); err != nil || res != (SweepResult{}) {
		t.Errorf("nothing expired yet: %+v, %v", res, err)
	}
	clock.Advance(time.Second)
	if res, err := g.Sweep(ctx); err != nil || res != (SweepResult{Triplets: 1}) {
		t.Errorf("pending past the retry window: %+v, %v", res, err)
	}
	clock.Advance(35 * 24 * time.Hour)
	if res, err := g.Sweep(ctx); err != nil || res != (SweepResult{Triplets: 1, Clients: 1}) {
		t.Errorf("passed triplet and AWL past MaxAge: %+v, %v", res, err)
	}
	if st, _ := g.Stats(ctx); st != (Stats{}) {
		t.Errorf("after sweeps: %+v", st)
	}
}

func TestAdminListAndDelete(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 5
	g := New(openTestBolt(t, ""), cfg, nil, clock.Now)
	for i := range 3 {
		for j := range 4 {
			in := Input{
				ClientIP:  netip.AddrFrom4([4]byte{192, 0, byte(i), 7}),
				Sender:    fmt.Sprintf("sender%c@x.example", 'a'+j),
				Recipient: fmt.Sprintf("rcpt%d@y.example", j%2),
			}
			if v, err := g.Check(ctx, in); err != nil || v.Reason != ReasonNew {
				t.Fatalf("%+v: %+v %v", in, v, err)
			}
		}
	}
	g.Check(ctx, Input{ClientIP: netip.MustParseAddr("192.0.0.8"), Sender: "", Recipient: "rcpt0@y.example"})

	all, err := g.ListTriplets(ctx, ListOptions{})
	if err != nil || len(all) != 13 {
		t.Fatalf("ListTriplets: %d entries, %v", len(all), err)
	}
	if e := all[0]; e.Network != "192.0.0.0" || e.Sender != "" || e.Recipient != "rcpt0@y.example" || e.Passed || !e.First.Equal(clock.Now()) {
		t.Errorf("first entry: %+v", e)
	}
	if e := all[1]; e.Network != "192.0.0.0" || e.Sender != "sendera@x.example" || e.Recipient != "rcpt0@y.example" {
		t.Errorf("second entry: %+v", e)
	}
	if got, _ := g.ListTriplets(ctx, ListOptions{Prefix: "192.0.1.0/"}); len(got) != 4 {
		t.Errorf("prefix filter: %d entries", len(got))
	}
	if got, _ := g.ListTriplets(ctx, ListOptions{Contains: "SENDERB@"}); len(got) != 3 {
		t.Errorf("substring filter: %d entries", len(got))
	}
	if got, _ := g.ListTriplets(ctx, ListOptions{Contains: "rcpt1", Limit: 2}); len(got) != 2 {
		t.Errorf("limit: %d entries", len(got))
	}

	n, err := g.DeleteTriplets(ctx, TripletFilter{Network: "192.0.2.99"}) // any address of the /24
	if err != nil || n != 4 {
		t.Errorf("delete by network: %d, %v", n, err)
	}
	n, err = g.DeleteTriplets(ctx, TripletFilter{Sender: "senderA+tag@X.example"}) // normalised
	if err != nil || n != 2 {
		t.Errorf("delete by sender: %d, %v", n, err)
	}
	n, err = g.DeleteTriplets(ctx, TripletFilter{SenderSet: true})
	if err != nil || n != 1 {
		t.Errorf("delete null sender: %d, %v", n, err)
	}
	n, err = g.DeleteTriplets(ctx, TripletFilter{Recipient: "RCPT1@y.example"})
	if err != nil || n != 4 {
		t.Errorf("delete by recipient: %d, %v", n, err)
	}
	if _, err := g.DeleteTriplets(ctx, TripletFilter{}); err == nil {
		t.Error("empty filter accepted")
	}
	left, _ := g.ListTriplets(ctx, ListOptions{})
	if len(left) != 2 {
		t.Errorf("%d left, want 2: %+v", len(left), left)
	}
	found, err := g.DeleteTriplet(ctx, Input{ClientIP: netip.MustParseAddr("192.0.0.1"), Sender: "senderc@x.example", Recipient: "rcpt0@y.example"})
	if !found || err != nil {
		t.Errorf("DeleteTriplet: %v %v", found, err)
	}
	found, _ = g.DeleteTriplet(ctx, Input{ClientIP: netip.MustParseAddr("192.0.0.1"), Sender: "senderc@x.example", Recipient: "rcpt0@y.example"})
	if found {
		t.Error("DeleteTriplet found a deleted triplet")
	}

	for _, ip := range []string{"192.0.2.1", "2001:db8::1"} {
		if err := g.WhitelistClient(ctx, netip.MustParseAddr(ip)); err != nil {
			t.Fatal(err)
		}
	}
	clients, err := g.ListClients(ctx, ListOptions{Contains: "2001"})
	if err != nil || len(clients) != 1 || clients[0].Client != "2001:db8::1" || clients[0].Count != 5 || !clients[0].Whitelisted {
		t.Errorf("ListClients: %+v, %v", clients, err)
	}
	st, err := g.Stats(ctx)
	if err != nil || st != (Stats{Triplets: 1, Pending: 1, Clients: 2, AWLClients: 2}) {
		t.Errorf("stats: %+v, %v", st, err)
	}
	g0 := New(openTestBolt(t, ""), testConfig(), nil, clock.Now)
	if err := g0.WhitelistClient(ctx, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("WhitelistClient with the auto-whitelist disabled: no error")
	}
}
