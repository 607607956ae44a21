package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
)

// cuttingProxy forwards TCP connections on 127.0.0.1 to a PostgreSQL
// server. Once armed, the next connection that sends an eventlog_append
// statement has it forwarded and then loses its client side: the client
// sees the connection break, while the proxy keeps reading the server's
// answer, so the server finishes (and commits) the statement.
type cuttingProxy struct {
	ln       net.Listener
	upstream func() (net.Conn, error)
	armed    atomic.Bool
	cuts     atomic.Int32
	wg       sync.WaitGroup
}

func startCuttingProxy(t *testing.T, server string) (*cuttingProxy, string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(server)
	if err != nil {
		t.Fatal(err)
	}
	network, address := "tcp", net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
	if len(cfg.Host) > 0 && cfg.Host[0] == '/' {
		network, address = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, upstream: func() (net.Conn, error) { return net.Dial(network, address) }}
	p.wg.Go(p.accept)
	t.Cleanup(func() { _ = ln.Close(); p.wg.Wait() })
	u := &url.URL{Scheme: "postgres", User: url.User(cfg.User), Host: ln.Addr().String(), Path: "/" + cfg.Database, RawQuery: "sslmode=disable"}
	return p, u.String()
}

func (p *cuttingProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := p.upstream()
		if err != nil {
			_ = client.Close()
			continue
		}
		p.wg.Go(func() { p.pipe(client, server) })
	}
}

func (p *cuttingProxy) pipe(client, server net.Conn) {
	defer func() { _ = server.Close() }()
	cut := make(chan struct{})
	go func() {
		// Server to client, until the cut; then the server's answer is
		// read and dropped, so that it can finish the statement.
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			select {
			case <-cut:
			default:
				if n > 0 {
					_, _ = client.Write(buf[:n])
				}
			}
			if err != nil {
				_ = client.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
			if bytes.Contains(buf[:n], []byte("eventlog_append")) && p.armed.CompareAndSwap(true, false) {
				p.cuts.Add(1) // before the client can see the cut
				close(cut)
				_ = client.Close()
				time.Sleep(2 * time.Second) // the server finishes while its answer is drained
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestLostAnswerIsNotRunAgain: when the connection breaks after a batch's
// statement was sent, the statement may have committed. Its appends must
// fail with ErrStorageUnavailable (outcome unknown), not be run again one
// by one, where they would find their own events and answer conflicts
// (and a caller's retry would record them twice). Each append is recorded
// exactly once, and none answers a conflict.
func TestLostAnswerIsNotRunAgain(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	direct := openStore(t, dbURL, postgres.Options{})
	proxy, proxied := startCuttingProxy(t, dbURL)
	s := openStore(t, proxied, postgres.Options{Writers: 1, MaxConns: 4})

	// The one writer waits on a held row, so that the next two appends
	// queue and go out in one batch.
	appendOne(t, s, sid("held"), 0, "")
	_, release := holdStream(t, direct, "held")
	blocked := make(chan error, 1)
	go func() {
		_, err := s.Append(context.Background(), eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: sid("held"), Version: 1}},
			Events:   []eventlog.Event{{Stream: sid("held"), Type: "E", Data: json.RawMessage(`{}`)}},
		})
		blocked <- err
	}()
	waitForLockWait(t, direct, 1)

	errs := make(chan error, 2)
	for _, stream := range []string{"a", "b"} {
		go func() {
			_, err := s.Append(context.Background(), eventlog.AppendRequest{
				Expected: []eventlog.ExpectedVersion{{Stream: sid(stream), Version: 0}},
				Events:   []eventlog.Event{{Stream: sid(stream), Type: "E", Data: json.RawMessage(`{}`)}},
			})
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond) // both queue behind the blocked batch
	proxy.armed.Store(true)
	release()
	if err := <-blocked; err != nil {
		t.Fatalf("the blocked append: %v", err)
	}
	// Both usually go out in the batch whose answer is lost; on a slow
	// machine the second may come in a later batch, and succeed.
	lost := 0
	for range 2 {
		switch err := <-errs; {
		case errors.Is(err, eventlog.ErrStorageUnavailable):
			lost++
		case err != nil:
			t.Errorf("an append whose answer may have been lost: %v; want ErrStorageUnavailable or success", err)
		}
	}
	if lost == 0 {
		t.Error("no append answered ErrStorageUnavailable although an answer was cut")
	}
	if proxy.cuts.Load() != 1 {
		t.Fatalf("%d connections cut, want 1", proxy.cuts.Load())
	}
	// The server committed the batch: each append is there once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := direct.StreamVersions(context.Background(), []eventlog.StreamID{sid("a"), sid("b")})
		if err != nil {
			t.Fatal(err)
		}
		if v[0] == 1 && v[1] == 1 {
			break
		}
		if v[0] > 1 || v[1] > 1 || time.Now().After(deadline) {
			t.Fatalf("versions after the lost answer: %v; want each append recorded once", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var n int
	if err := direct.Pool().QueryRow(context.Background(), `SELECT count(*) FROM events WHERE stream_id IN ('a', 'b')`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d events of a and b (%v), want 2", n, err)
	}
}
