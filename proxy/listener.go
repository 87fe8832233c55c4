package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xlb-project/xlb/proxy/admin"
	"github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/internal/concurrency"
	"github.com/xlb-project/xlb/proxy/internal/h1"
)

// listener is one running ListenerConfig.
type listener struct {
	cfg   config.ListenerConfig
	ln    net.Listener
	srv   *http.Server
	h1    *h1.Server // plain HTTP/1.1 listeners: the lean path in front of srv
	certs *certStore // TLS only
	stop  chan struct{}
	done  chan struct{}
}

// sameServer reports whether two listener configs can share one running
// server (only the certificate files may differ: they are swapped in place).
func sameServer(a, b config.ListenerConfig) bool {
	a.Name, b.Name = "", ""
	if (a.TLS == nil) != (b.TLS == nil) {
		return false
	}
	a.TLS, b.TLS = nil, nil
	return a == b
}

// checkListeners verifies that every new listener of cfg can be created
// (certificates load) before anything is changed.
func (p *Proxy) checkListeners(cfg *config.Config) error {
	for _, lc := range cfg.Listeners {
		if lc.TLS != nil {
			if _, err := tls.LoadX509KeyPair(lc.TLS.CertFile, lc.TLS.KeyFile); err != nil {
				return fmt.Errorf("listener %s: load certificate: %w", lc.Name, err)
			}
		}
	}
	return nil
}

// syncListeners starts, keeps or stops listeners to match p.cfg, and
// returns the errors of listeners that failed to start. Called with p.mu
// held while running.
func (p *Proxy) syncListeners() error {
	var errs []error
	want := map[string]config.ListenerConfig{}
	for _, lc := range p.cfg.Listeners {
		want[lc.Name] = lc
	}
	for name, l := range p.listeners {
		lc, ok := want[name]
		if ok && sameServer(l.cfg, lc) {
			if lc.TLS != nil && *lc.TLS != *l.cfg.TLS {
				l.certs.setFiles(lc.TLS.CertFile, lc.TLS.KeyFile, lc.TLS.ReloadInterval.D())
			}
			l.cfg = lc
			continue
		}
		// Stop taking connections here at once so a replacement can bind;
		// connections already open finish gracefully.
		p.stopListener(l)
		delete(p.listeners, name)
	}
	for name, lc := range want {
		if p.listeners[name] != nil {
			continue
		}
		l, err := p.startListener(lc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.listeners[name] = l
	}
	return errors.Join(errs...)
}

func (p *Proxy) startListener(lc config.ListenerConfig) (*listener, error) {
	ln, err := net.Listen("tcp", lc.Address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", lc.Address, err)
	}
	l := &listener{cfg: lc, stop: make(chan struct{}), done: make(chan struct{})}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: lc.ReadHeaderTimeout.D(),
		IdleTimeout:       lc.IdleTimeout.D(),
		MaxHeaderBytes:    lc.MaxHeaderBytes,
		ConnContext:       connContext,
		ConnState:         p.conns.connState,
		ErrorLog:          log.New(slogWriter{p.log}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return p.runCtx },
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	body := lc.BodyLimits
	tl := &trackingListener{Listener: ln, reg: p.conns, sniff: lc.TLS == nil, writeTimeout: lc.WriteTimeout.D(), body: &body}
	if lc.MaxConnectionsPerClient > 0 {
		tl.perClient = concurrency.NewPerClient(lc.MaxConnectionsPerClient, 64, nil)
		tl.exempt = func(a netip.Addr) bool { return p.state.Load().isTrusted(a) }
		tl.refused = p.metrics.refused.WithLabelValues("max_connections_per_client", lc.Name)
		if lc.TLS == nil {
			tl.refusal = concurrency.Refusal("max_connections_per_client; name=" + lc.Name)
		}
	}
	if lc.TLS != nil {
		cs, err := newCertStore(lc.TLS.CertFile, lc.TLS.KeyFile, lc.TLS.ReloadInterval.D(), p.log)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		l.certs = cs
		protos.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{GetCertificate: cs.get, MinVersion: tls.VersionTLS12}
	} else if lc.H2C {
		protos.SetUnencryptedHTTP2(true)
	}
	srv.Protocols = &protos
	l.ln, l.srv = tl, srv
	if lc.TLS == nil && !lc.H2C {
		l.h1 = h1.NewServer(tl, srv, p.runCtx, p.log)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(l.done)
		var err error
		if lc.TLS != nil {
			go l.certs.watch(l.stop)
			err = srv.ServeTLS(tl, "", "")
		} else if l.h1 != nil {
			err = l.h1.Serve()
		} else {
			err = srv.Serve(tl)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			p.log.Error("listener stopped", "listener", lc.Name, "err", err)
		}
	}()
	p.log.Info("listening", "listener", lc.Name, "address", ln.Addr().String(), "tls", lc.TLS != nil, "h2c", lc.H2C)
	return l, nil
}

// stopListener closes the listening socket now and shuts the server down
// gracefully in the background (bounded by the shutdown timeout).
func (p *Proxy) stopListener(l *listener) {
	close(l.stop)
	_ = l.ln.Close()
	timeout := p.cfg.ShutdownTimeout.D()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if l.shutdown(ctx) != nil {
			_ = l.close()
		}
	}()
}

// shutdown stops the listener's server gracefully (http.Server.Shutdown).
func (l *listener) shutdown(ctx context.Context) error {
	if l.h1 != nil {
		return l.h1.Shutdown(ctx)
	}
	return l.srv.Shutdown(ctx)
}

// close closes the listener's server and its connections now.
func (l *listener) close() error {
	if l.h1 != nil {
		return l.h1.Close()
	}
	return l.srv.Close()
}

// Addrs returns the bound address of each running listener by its name
// (useful with port 0).
func (p *Proxy) Addrs() map[string]net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]net.Addr{}
	for name, l := range p.listeners {
		out[name] = l.ln.Addr()
	}
	return out
}

// Run starts the listeners, the health checks and the admin API, and
// serves until ctx ends; then it shuts down gracefully: listeners stop
// accepting, in-flight requests finish (bounded by shutdown_timeout) and
// upgraded connections get drain_timeout before they are closed.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return errors.New("run proxy: already running")
	}
	p.runCtx = context.WithoutCancel(ctx)
	if err := p.checkListeners(p.cfg); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("run proxy: %w", err)
	}
	adm, err := admin.Start(p.cfg.Admin, p, p.Metrics(), p.StatusPage())
	if err != nil {
		p.mu.Unlock()
		return fmt.Errorf("run proxy: %w", err)
	}
	p.running = true
	if err := p.syncListeners(); err != nil {
		for name, l := range p.listeners {
			p.stopListener(l)
			delete(p.listeners, name)
		}
		adm.Close()
		p.running = false
		p.mu.Unlock()
		return fmt.Errorf("run proxy: %w", err)
	}
	p.admin = adm
	p.syncDiscovery()
	p.mu.Unlock()

	proberCtx, stopProber := context.WithCancel(context.Background())
	proberDone := make(chan struct{})
	go func() {
		defer close(proberDone)
		_ = p.prober.Run(proberCtx)
	}()

	<-ctx.Done()
	p.log.Info("shutting down")
	p.stopDiscovery()
	err = p.shutdown()
	stopProber()
	<-proberDone
	return err
}

func (p *Proxy) shutdown() error {
	p.mu.Lock()
	cfg := p.cfg
	ls := make([]*listener, 0, len(p.listeners))
	for name, l := range p.listeners {
		ls = append(ls, l)
		delete(p.listeners, name)
	}
	adm := p.admin
	p.admin = nil
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	// Upgraded connections are not covered by Server.Shutdown: close them
	// after the drain timeout (or the shutdown deadline, if sooner).
	upgraded := time.AfterFunc(min(cfg.DrainTimeout.D(), cfg.ShutdownTimeout.D()), func() {
		p.conns.closeUpgraded(func(*backend) bool { return true })
	})
	defer upgraded.Stop()
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, l := range ls {
		close(l.stop)
		wg.Go(func() {
			if err := l.shutdown(ctx); err != nil {
				failed.Store(true)
				_ = l.close()
			}
		})
	}
	wg.Wait()
	// Wait for the upgraded connections to end, up to the deadline.
	for p.conns.countUpgraded(func(*backend) bool { return true }) > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.conns.closeUpgraded(func(*backend) bool { return true })
	if adm != nil {
		adm.Close()
	}
	p.wg.Wait()
	if st := p.state.Load(); st != nil {
		st.transport.CloseIdleConnections()
		st.client.CloseIdleConnections()
		if st.accessLog != nil {
			st.accessLog.close()
		}
	}
	p.mu.Lock()
	p.running = false
	p.mu.Unlock()
	if failed.Load() {
		return errors.New("shut down proxy: requests still in flight at the shutdown timeout were cut")
	}
	return nil
}

// certStore holds a listener's certificate and re-reads the files when
// their modification time or size changes.
type certStore struct {
	log      *slog.Logger
	mu       sync.Mutex
	certFile string
	keyFile  string
	interval time.Duration
	stamp    string
	cert     atomic.Pointer[tls.Certificate]
}

func newCertStore(certFile, keyFile string, interval time.Duration, log *slog.Logger) (*certStore, error) {
	cs := &certStore{log: log, certFile: certFile, keyFile: keyFile, interval: interval}
	if err := cs.load(); err != nil {
		return nil, err
	}
	return cs, nil
}

func fileStamp(paths ...string) string {
	s := ""
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return ""
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s
}

// load reads the files; on error the old certificate stays.
func (cs *certStore) load() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	stamp := fileStamp(cs.certFile, cs.keyFile)
	c, err := tls.LoadX509KeyPair(cs.certFile, cs.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", cs.certFile, err)
	}
	cs.cert.Store(&c)
	cs.stamp = stamp
	return nil
}

func (cs *certStore) setFiles(certFile, keyFile string, interval time.Duration) {
	cs.mu.Lock()
	cs.certFile, cs.keyFile, cs.interval, cs.stamp = certFile, keyFile, interval, ""
	cs.mu.Unlock()
	cs.refresh()
}

// refresh reloads the certificate if the files changed.
func (cs *certStore) refresh() {
	cs.mu.Lock()
	changed := fileStamp(cs.certFile, cs.keyFile) != cs.stamp
	cs.mu.Unlock()
	if !changed {
		return
	}
	if err := cs.load(); err != nil {
		cs.log.Error("reload certificate, keeping the old one", "file", cs.certFile, "err", err)
		return
	}
	cs.log.Info("certificate reloaded", "file", cs.certFile)
}

func (cs *certStore) watch(stop <-chan struct{}) {
	cs.mu.Lock()
	d := cs.interval
	cs.mu.Unlock()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			cs.refresh()
		}
	}
}

func (cs *certStore) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return cs.cert.Load(), nil
}

// slogWriter turns net/http's error log lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	n := len(p)
	if n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
	}
	w.log.Debug("http server", "msg", string(p))
	return n, nil
}
