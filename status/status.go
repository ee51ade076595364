// Package status serves the unit's state over HTTP: health, the JSON API, and later the page.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"appliance/health"
	"appliance/hw"
	"appliance/media"
	"appliance/supervisor"
	"appliance/watchdog"
)

// Report is the body of GET /api/v1/status. Field names are a contract:
// operators' scripts and later releases read them, so only add, never rename.
type Report struct {
	Unit       Unit                 `json:"unit"`
	Streams    []media.StreamStatus `json:"streams"`
	Supervisor supervisor.Node      `json:"supervisor"`
	Hardware   hw.Hardware          `json:"hardware"`
	Health     []health.Condition   `json:"health"` // active conditions, most severe first
	Watchdog   watchdog.Status      `json:"watchdog"`
	Events     []Event              `json:"events"` // most recent first
}

// Node is one entry of the supervision tree.
type Node = supervisor.Node

// Unit identifies the unit and its software.
type Unit struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	UptimeS float64   `json:"uptime_s"`
	Started time.Time `json:"started"`
	// State is "running", or "failed" once the supervision root has given up.
	State string `json:"state"`
}

// Source produces the current report.
type Source interface {
	Report() Report
}

// Server is the unit's HTTP API. It runs outside the supervision tree on
// purpose: when everything else has given up, it is how an operator finds out why.
type Server struct {
	src Source
	log *slog.Logger
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr now, so that a busy port is reported before anything
// else starts.
func Listen(addr string, src Source, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status: listen on %s: %w (set status.listen to a free address)", addr, err)
	}
	s := &Server{src: src, log: log, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/api/v1/status", s.status)
	mux.HandleFunc("/api/v1/events", s.events)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path+" (try /api/v1/status)")
	})
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Close releases the listener of a server that will not be served.
func (s *Server) Close() error { return s.ln.Close() }

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(shut)
	})
	defer stop()
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; this endpoint is read-only (GET)")
		return false
	}
	return true
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	rep := s.src.Report()
	code := http.StatusOK
	if rep.Unit.State != "running" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"state": rep.Unit.State})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, s.src.Report())
}

// events serves GET /api/v1/events[?limit=N], most recent first.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	ev := s.src.Report().Events
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "limit must be a whole number of at least 1, got "+strconv.Quote(v))
			return
		}
		if n < len(ev) {
			ev = ev[:n]
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": ev})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
