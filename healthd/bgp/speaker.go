package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// ErrNoNextHopV6 is returned for an IPv6 VIP when an IPv4 session would
// carry it without next_hop_v6: the session's own address cannot be its
// next hop.
var ErrNoNextHopV6 = errors.New("next_hop_v6 is required to announce IPv6 VIPs over IPv4 sessions")

// Speaker is one BGP speaker announcing host routes (/32, /128) for VIPs.
// It is safe for concurrent use.
type Speaker struct {
	cfg         Config
	log         *slog.Logger
	srv         *server.BgpServer
	communities []uint32
	nextHopV4   netip.Addr
	nextHopV6   netip.Addr
	v4Peers     bool // some peer is IPv4

	mu        sync.Mutex
	announced map[netip.Addr]route
	counts    Counts
	stopped   bool
}

// route is what the speaker has announced for one VIP.
type route struct {
	id       uuid.UUID
	shutdown bool // carries GRACEFUL_SHUTDOWN
	since    time.Time
}

// Counts are totals since the speaker started, for metrics.
type Counts struct {
	Announcements uint64 // routes added or re-announced with other attributes
	Withdrawals   uint64
}

// New validates cfg and returns a speaker that is not yet started.
func New(cfg Config, log *slog.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Speaker{cfg: cfg, log: log, announced: map[netip.Addr]route{}}
	for _, c := range cfg.Communities {
		v, _ := ParseCommunity(c) // validated
		s.communities = append(s.communities, v)
	}
	s.nextHopV4 = netip.IPv4Unspecified()
	if cfg.NextHopV4 != "" {
		s.nextHopV4 = netip.MustParseAddr(cfg.NextHopV4)
	}
	s.nextHopV6 = netip.IPv6Unspecified()
	if cfg.NextHopV6 != "" {
		s.nextHopV6 = netip.MustParseAddr(cfg.NextHopV6)
	}
	for _, p := range cfg.Peers {
		if netip.MustParseAddr(p.Address).Is4() {
			s.v4Peers = true
		}
	}
	return s, nil
}

// Start runs the BGP server and configures the peers; sessions come up in
// the background.
func (s *Speaker) Start(ctx context.Context) error {
	s.srv = server.NewBgpServer(server.LoggerOption(s.log.With("component", "bgp"), nil))
	go s.srv.Serve()
	port := int32(-1) // -1: GoBGP opens no listener
	if s.cfg.ListenPort != 0 {
		port = int32(s.cfg.ListenPort)
	}
	g := &api.Global{Asn: s.cfg.LocalAS, RouterId: s.cfg.RouterID, ListenPort: port}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("start bgp: %w", err)
	}
	for _, p := range s.cfg.Peers {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			s.srv.Stop()
			return fmt.Errorf("add bgp peer %s: %w", p.Address, err)
		}
	}
	return nil
}

func apiPeer(p PeerConfig) *api.Peer {
	hold := uint64(p.holdTime() / time.Second)
	port := uint32(p.Port)
	if port == 0 {
		port = DefaultPort
	}
	fam := func(afi api.Family_Afi) *api.AfiSafi {
		return &api.AfiSafi{Config: &api.AfiSafiConfig{
			Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true,
		}}
	}
	return &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address, PeerAsn: p.AS, AuthPassword: p.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: hold, KeepaliveInterval: max(hold/3, 1), ConnectRetry: 1,
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{RemotePort: port, LocalAddress: p.LocalAddress},
		AfiSafis:  []*api.AfiSafi{fam(api.Family_AFI_IP), fam(api.Family_AFI_IP6)},
	}
}

// Stop closes every session at once (no graceful leave: see Leave) and
// stops the server.
func (s *Speaker) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.srv == nil {
		return
	}
	s.stopped = true
	s.srv.Stop()
}

// Sync makes the announced set equal want: every address in want is
// announced as a host route (with GRACEFUL_SHUTDOWN when its value is
// true), every other announced address is withdrawn. Per-address failures
// are returned joined; the others are applied.
func (s *Speaker) Sync(want map[netip.Addr]bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.srv == nil {
		return errors.New("bgp speaker not running")
	}
	var errs []error
	for a, r := range s.announced {
		if _, ok := want[a]; ok {
			continue
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{r.id}}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", a, err))
			continue
		}
		delete(s.announced, a)
		s.counts.Withdrawals++
		s.log.Info("bgp withdraw", "vip", a)
	}
	addrs := make([]netip.Addr, 0, len(want))
	for a := range want {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		shutdown := want[a]
		if r, ok := s.announced[a]; ok && r.shutdown == shutdown {
			continue
		}
		id, err := s.announce(a, shutdown)
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", a, err))
			continue
		}
		s.announced[a] = route{id: id, shutdown: shutdown, since: time.Now()}
		s.counts.Announcements++
		s.log.Info("bgp announce", "vip", a, "graceful_shutdown", shutdown)
	}
	return errors.Join(errs...)
}

// announce adds (or replaces) the host route of a.
func (s *Speaker) announce(a netip.Addr, shutdown bool) (uuid.UUID, error) {
	a = a.Unmap()
	p, err := s.path(a, shutdown)
	if err != nil {
		return uuid.UUID{}, err
	}
	rs, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}})
	if err != nil {
		return uuid.UUID{}, err
	}
	return rs[0].UUID, nil
}

func (s *Speaker) path(a netip.Addr, shutdown bool) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(netip.PrefixFrom(a, a.BitLen()))
	if err != nil {
		return nil, err
	}
	comms := slices.Clone(s.communities)
	if shutdown {
		comms = append(comms, GracefulShutdown)
	}
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if len(comms) > 0 {
		attrs = append(attrs, bgppkt.NewPathAttributeCommunities(comms))
	}
	fam := bgppkt.RF_IPv4_UC
	if a.Is4() {
		nh, err := bgppkt.NewPathAttributeNextHop(s.nextHopV4)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		if s.v4Peers && s.nextHopV6.IsUnspecified() {
			return nil, ErrNoNextHopV6
		}
		fam = bgppkt.RF_IPv6_UC
		mp, err := bgppkt.NewPathAttributeMpReachNLRI(fam, []bgppkt.PathNLRI{{NLRI: nlri}}, s.nextHopV6)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}

// Announcement is one announced host route.
type Announcement struct {
	VIP              netip.Addr `json:"vip"`
	GracefulShutdown bool       `json:"graceful_shutdown,omitempty"`
	Since            time.Time  `json:"since"`
}

// Announced lists the announced routes in address order.
func (s *Speaker) Announced() []Announcement {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Announcement, 0, len(s.announced))
	for a, r := range s.announced {
		out = append(out, Announcement{VIP: a, GracefulShutdown: r.shutdown, Since: r.since})
	}
	slices.SortFunc(out, func(x, y Announcement) int { return x.VIP.Compare(y.VIP) })
	return out
}

// Counts returns the announcement and withdrawal totals.
func (s *Speaker) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// Session is the state of one peer's session.
type Session struct {
	Peer     string        `json:"peer"`
	AS       uint32        `json:"as"`
	State    string        `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Uptime   time.Duration `json:"uptime,omitempty"`
	HoldTime time.Duration `json:"hold_time,omitempty"` // negotiated
	Sent     uint64        `json:"sent"`                // routes advertised to the peer
	Received uint64        `json:"received"`            // routes received from the peer
}

// Established reports whether the session is up.
func (s Session) Established() bool { return s.State == "established" }

// Sessions lists the peers' sessions in configuration order.
func (s *Speaker) Sessions(ctx context.Context) ([]Session, error) {
	s.mu.Lock()
	srv, stopped := s.srv, s.stopped
	s.mu.Unlock()
	if srv == nil || stopped {
		return nil, errors.New("bgp speaker not running")
	}
	by := map[string]Session{}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		ss := Session{Peer: p.GetConf().GetNeighborAddress(), AS: p.GetConf().GetPeerAsn(), State: stateName(p.GetState().GetSessionState())}
		if t := p.GetTimers().GetState(); t != nil {
			ss.HoldTime = time.Duration(t.GetNegotiatedHoldTime()) * time.Second
			if ss.Established() && t.GetUptime() != nil {
				ss.Uptime = time.Since(t.GetUptime().AsTime()).Truncate(time.Second)
			}
		}
		for _, f := range p.GetAfiSafis() {
			st := f.GetState()
			ss.Sent += st.GetAdvertised()
			ss.Received += st.GetReceived()
		}
		by[ss.Peer] = ss
	})
	if err != nil {
		return nil, fmt.Errorf("list bgp peers: %w", err)
	}
	out := make([]Session, 0, len(s.cfg.Peers))
	for _, p := range s.cfg.Peers {
		a := netip.MustParseAddr(p.Address).String()
		ss, ok := by[a]
		if !ok {
			ss = Session{Peer: a, AS: p.AS, State: "unknown"}
		}
		out = append(out, ss)
	}
	return out, nil
}

func stateName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown(" + strconv.Itoa(int(st)) + ")"
}
