package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// origin is the read-through HTTP origin of -mode read-through: GET
// /items/{key} answers 200 with the key's value and Cache-Control max-age,
// or 404 for a key that is not the scenario's. It counts the loads it
// served, which the report shows per second.
type origin struct {
	srv       *http.Server
	ln        net.Listener
	valueSize int
	maxAge    time.Duration
	loads     atomic.Int64 // requests answered with 200
	misses    atomic.Int64 // requests answered with 404
}

func startOrigin(valueSize int, maxAge time.Duration) (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &origin{ln: ln, valueSize: valueSize, maxAge: maxAge}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{key}", o.item)
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go o.srv.Serve(ln)
	return o, nil
}

// urlTemplate is sidecache's --origin-url.
func (o *origin) urlTemplate() string {
	return "http://" + o.ln.Addr().String() + "/items/{key}"
}

func (o *origin) item(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !knownKey(key) {
		o.misses.Add(1)
		http.NotFound(w, r)
		return
	}
	o.loads.Add(1)
	w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", int(o.maxAge/time.Second)))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(valueFor(key, o.valueSize))
}

func (o *origin) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := o.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		o.srv.Close()
	}
}
