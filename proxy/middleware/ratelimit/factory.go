package ratelimit

import (
	"gopkg.in/yaml.v3"

	"github.com/xlb-project/xlb/proxy/middleware"
)

// Kind is the middleware kind a route lists to use a rate limit.
const Kind = "ratelimit"

// Factory returns the middleware factory of kind ratelimit: each route
// entry's config is one Config; the client address is the one the proxy
// judged (middleware.ClientAddr).
func (s *Set) Factory() middleware.Factory {
	return func(route string, n *yaml.Node) (middleware.Middleware, error) {
		c, err := ParseConfig(n)
		if err != nil {
			return nil, err
		}
		l := s.Limiter(c, Options{Route: route, Client: middleware.ClientAddr})
		return l.Wrap, nil
	}
}
