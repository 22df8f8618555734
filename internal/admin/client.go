package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"postgate/greylist"
)

// Client talks to a running daemon's admin API.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client for the admin listener at hostport.
func NewClient(hostport string) *Client {
	return &Client{base: "http://" + hostport, http: &http.Client{Timeout: 30 * time.Second}}
}

// Ping tells whether a daemon answers at all; the CLI falls back to opening
// the database itself when none does.
func (c *Client) Ping(ctx context.Context) error {
	var s string
	return c.do(ctx, http.MethodGet, "/healthz", nil, &s)
}

func (c *Client) Stats(ctx context.Context) (greylist.Stats, error) {
	var s greylist.Stats
	err := c.do(ctx, http.MethodGet, "/greylist/stats", nil, &s)
	return s, err
}

func (c *Client) ListTriplets(ctx context.Context, o greylist.ListOptions) ([]greylist.TripletEntry, error) {
	var out []greylist.TripletEntry
	err := c.do(ctx, http.MethodGet, "/greylist/triplets", listQuery(o), &out)
	return out, err
}

func (c *Client) ListClients(ctx context.Context, o greylist.ListOptions) ([]greylist.ClientEntry, error) {
	var out []greylist.ClientEntry
	err := c.do(ctx, http.MethodGet, "/greylist/clients", listQuery(o), &out)
	return out, err
}

func (c *Client) DeleteTriplets(ctx context.Context, f greylist.TripletFilter) (int, error) {
	q := url.Values{}
	if f.Network != "" {
		q.Set("network", f.Network)
	}
	if f.Sender != "" || f.SenderSet {
		q.Set("sender", f.Sender)
	}
	if f.Recipient != "" {
		q.Set("recipient", f.Recipient)
	}
	var out struct{ Deleted int }
	err := c.do(ctx, http.MethodDelete, "/greylist/triplets", q, &out)
	return out.Deleted, err
}

func (c *Client) DeleteClient(ctx context.Context, ip netip.Addr) (bool, error) {
	var out struct{ Deleted bool }
	err := c.do(ctx, http.MethodDelete, "/greylist/clients/"+ip.String(), nil, &out)
	return out.Deleted, err
}

func (c *Client) WhitelistClient(ctx context.Context, ip netip.Addr) error {
	var out struct{ Whitelisted bool }
	return c.do(ctx, http.MethodPut, "/greylist/whitelist/"+ip.String(), nil, &out)
}

func listQuery(o greylist.ListOptions) url.Values {
	q := url.Values{}
	if o.Prefix != "" {
		q.Set("prefix", o.Prefix)
	}
	if o.Contains != "" {
		q.Set("contains", o.Contains)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	return q
}

// ErrUnreachable means no daemon answered on the admin address.
var ErrUnreachable = errors.New("no postgate daemon answers on the admin address")

func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
			return errors.New(eb.Error)
		}
		return fmt.Errorf("admin API: %s: %s", resp.Status, body)
	}
	if s, ok := out.(*string); ok {
		*s = string(body)
		return nil
	}
	return json.Unmarshal(body, out)
}

var _ GreylistAdmin = (*Client)(nil)
