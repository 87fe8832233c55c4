package healthd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"golang.org/x/sys/unix"
)

// Peer is the credentials of the process on the other end of the socket.
type Peer struct {
	UID, GID uint32
	PID      int32
	Groups   []uint32 // supplementary groups, from /proc
}

// Access is what a peer may do.
type Access int

// Access levels.
const (
	NoAccess Access = iota
	ReadAccess
	WriteAccess
)

// Authorize decides from the peer's credentials: root may change, members
// of the socket group (primary or supplementary) may read, nobody else may do
// anything. group < 0 means no group.
func Authorize(p Peer, group int) Access {
	if p.UID == 0 {
		return WriteAccess
	}
	if group >= 0 && (p.GID == uint32(group) || slices.Contains(p.Groups, uint32(group))) {
		return ReadAccess
	}
	return NoAccess
}

type peerKey struct{}

// Server serves the API of a Daemon.
type Server struct {
	d     *Daemon
	group int
	log   *slog.Logger
	srv   *http.Server
}

// NewServer returns the API server; group is the socket group's GID (-1:
// root only).
func NewServer(d *Daemon, group int, log *slog.Logger) *Server {
	s := &Server{d: d, group: group, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) { reply(w, d.Status()) })
	mux.HandleFunc("GET "+api.PathStats, func(w http.ResponseWriter, r *http.Request) {
		st, err := d.Stats()
		if err != nil {
			fail(w, http.StatusInternalServerError, fmt.Errorf("read counters: %w", err))
			return
		}
		reply(w, st)
	})
	mux.HandleFunc("POST "+api.PathVIPAdd, func(w http.ResponseWriter, r *http.Request) {
		var c api.VIPConfig
		if decode(w, r, &c) {
			s.result(w, r, d.AddVIP(c))
		}
	})
	mux.HandleFunc("POST "+api.PathVIPRemove, func(w http.ResponseWriter, r *http.Request) {
		if _, k, ok := decodeVIPRequest(w, r); ok {
			s.result(w, r, d.RemoveVIP(k))
		}
	})
	mux.HandleFunc("POST "+api.PathBackendAdd, func(w http.ResponseWriter, r *http.Request) {
		req, k, ok := decodeVIPRequest(w, r)
		if !ok {
			return
		}
		if req.Backend == nil {
			fail(w, http.StatusBadRequest, api.FieldErr("backend", "missing"))
			return
		}
		s.result(w, r, d.AddBackend(k, *req.Backend))
	})
	backendOp := func(path string, fn func(k api.VIPKey, a netip.Addr, req api.BackendRequest) error) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			req, k, ok := decodeVIPRequest(w, r)
			if !ok {
				return
			}
			a, err := api.ParseBackendAddr(req.Address)
			if err != nil {
				fail(w, http.StatusBadRequest, api.FieldErr("address", "%v", err))
				return
			}
			s.result(w, r, fn(k, a, req))
		})
	}
	backendOp(api.PathBackendRemove, func(k api.VIPKey, a netip.Addr, _ api.BackendRequest) error { return d.RemoveBackend(k, a) })
	backendOp(api.PathBackendDrain, func(k api.VIPKey, a netip.Addr, req api.BackendRequest) error {
		return d.Drain(k, a, time.Duration(req.Timeout))
	})
	backendOp(api.PathBackendUndrain, func(k api.VIPKey, a netip.Addr, _ api.BackendRequest) error { return d.Undrain(k, a) })
	backendOp(api.PathBackendWeight, func(k api.VIPKey, a netip.Addr, req api.BackendRequest) error { return d.SetWeight(k, a, req.Weight) })

	s.srv = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if p, err := peerOf(c); err == nil {
				return context.WithValue(ctx, peerKey{}, p)
			}
			return ctx
		},
	}
	return s
}

// decodeVIPRequest decodes a request naming a VIP and parses the VIP; on
// failure it has answered with the error.
func decodeVIPRequest(w http.ResponseWriter, r *http.Request) (api.BackendRequest, api.VIPKey, bool) {
	var req api.BackendRequest
	if !decode(w, r, &req) {
		return req, api.VIPKey{}, false
	}
	k, err := api.ParseVIPKey(req.VIP)
	if err != nil {
		fail(w, http.StatusBadRequest, api.FieldErr("vip", "%v", err))
		return req, api.VIPKey{}, false
	}
	return req, k, true
}

// authorize refuses a peer that may not do what it asks.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(Peer)
		if !ok {
			fail(w, http.StatusForbidden, errors.New("peer credentials unknown: permission denied"))
			return
		}
		need := ReadAccess
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			need = WriteAccess
		}
		if got := Authorize(p, s.group); got < need {
			what := "read"
			if need == WriteAccess {
				what = "change anything (only root may)"
			}
			s.log.Warn("api request refused", "uid", p.UID, "pid", p.PID, "path", r.URL.Path)
			fail(w, http.StatusForbidden, fmt.Errorf("permission denied: uid %d may not %s", p.UID, what))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) result(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		code := http.StatusBadRequest
		switch {
		case errors.Is(err, ErrUnknownVIP), errors.Is(err, ErrUnknownBackend):
			code = http.StatusNotFound
		case errors.Is(err, ErrDuplicateVIP), errors.Is(err, ErrDuplicate):
			code = http.StatusConflict
		}
		var fe *api.FieldError
		if !errors.As(err, &fe) && code == http.StatusBadRequest {
			code = http.StatusInternalServerError
		}
		fail(w, code, err)
		return
	}
	p, _ := r.Context().Value(peerKey{}).(Peer)
	s.log.Info("api change", "path", r.URL.Path, "uid", p.UID, "pid", p.PID)
	reply(w, struct{}{})
}

// Serve serves the API on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve api: %w", err)
	}
	return nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fail(w, http.StatusBadRequest, fmt.Errorf("decode request: %w", err))
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, err error) {
	e := api.Error{Error: err.Error()}
	var fe *api.FieldError
	if errors.As(err, &fe) {
		e.Field = fe.Field
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(e)
}

// peerOf reads SO_PEERCRED of a Unix socket connection and the peer's
// supplementary groups.
func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if cerr != nil {
		return Peer{}, fmt.Errorf("read peer credentials: %w", cerr)
	}
	p := Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	p.Groups = procGroups(cred.Pid)
	return p, nil
}

// procGroups reads the supplementary groups of a process.
func procGroups(pid int32) []uint32 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var gs []uint32
		for _, f := range strings.Fields(rest) {
			if g, err := strconv.ParseUint(f, 10, 32); err == nil {
				gs = append(gs, uint32(g))
			}
		}
		return gs
	}
	return nil
}

// ListenSocket creates the API socket at path, mode 0660, owned by root and
// group gid (-1: root's group), replacing a stale socket file.
func ListenSocket(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen on %s: another daemon is serving it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	// Created with the umask (at most 0755 for root: only root may connect)
	// and opened up to the group just after.
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if gid < 0 {
		gid = 0
	}
	if err := os.Chown(path, 0, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("chown %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}
