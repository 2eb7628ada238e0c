package apigw

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/ops"
)

// APIPrefix is the root of every authenticated endpoint.
const APIPrefix = "/api/v1/lb"

// routeKey is the fiber local that carries the matched route pattern, so
// metrics are labelled by pattern, never by raw path.
const routeKey = "apigw.route"

// observedKey marks requests that went through observe; errors fasthttp
// raises before routing (413, 431) reach errorHandler without it.
const observedKey = "apigw.observed"

func (s *Service) newApp(reg prometheus.Registerer) *fiber.App {
	app := fiber.New(fiber.Config{
		AppName:               "mrlb-apigw",
		BodyLimit:             BodyLimit,
		ErrorHandler:          s.errorHandler,
		DisableStartupMessage: true,
		Immutable:             true,
		CaseSensitive:         true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
	})
	app.Use(s.observe)
	app.Use(recover.New(recover.Config{
		EnableStackTrace: true,
		StackTraceHandler: func(c *fiber.Ctx, e any) {
			s.log.Error("panic serving request", "method", c.Method(), "path", c.Path(), "panic", fmt.Sprint(e), "stack", string(debug.Stack()))
		},
	}))

	// Operational endpoints, unauthenticated like the ops listener.
	g, ok := reg.(prometheus.Gatherer)
	if !ok {
		g = prometheus.NewRegistry()
	}
	h := ops.Handler(g, bus.ReadyCheck(s.nc, s.js, bus.BucketRegions))
	// The adaptor makes fasthttp's RequestCtx the request's context, and
	// deriving from it races with server shutdown (fasthttp resets its done
	// channel), so the ops handler gets a detached context instead.
	opsHandler := adaptor.HTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.Background()))
	}))
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		app.Get(p, named(p, opsHandler))
	}

	api := app.Group(APIPrefix, s.guard)
	api.Get("/status", named("/status", s.getStatus))
	api.Put("/strategy", named("/strategy", s.putStrategy))
	api.Get("/regions", named("/regions", s.listRegions))
	api.Post("/regions", named("/regions", s.addRegion))
	api.Get("/regions/:region", named("/regions/:region", s.getRegion))
	api.Put("/regions/:region", named("/regions/:region", s.updateRegion))
	api.Delete("/regions/:region", named("/regions/:region", s.removeRegion))
	api.Post("/health/check", named("/health/check", s.checkHealth))
	api.Get("/health/history", named("/health/history", s.healthHistory))
	api.Post("/failover/trigger", named("/failover/trigger", s.triggerFailover))
	api.Get("/failover/status", named("/failover/status", s.failoverStatus))
	api.Get("/certificates", named("/certificates", s.listCertificates))
	api.Delete("/failover/:from_region", named("/failover/:from_region", s.clearFailover))
	return app
}

// named records the route pattern for metrics and logs.
func named(pattern string, h fiber.Handler) fiber.Handler {
	if pattern[0] == '/' && pattern != "/healthz" && pattern != "/readyz" && pattern != "/metrics" {
		pattern = APIPrefix + pattern
	}
	return func(c *fiber.Ctx) error {
		c.Locals(routeKey, pattern)
		return h(c)
	}
}

// observe is the outermost middleware: it maps errors to responses (so the
// status it records is the one sent), then writes the access log and the
// metrics. It logs no header, so keys never reach the log.
func (s *Service) observe(c *fiber.Ctx) error {
	start := time.Now()
	c.Locals(observedKey, true)
	if err := c.Next(); err != nil {
		if herr := s.errorHandler(c, err); herr != nil {
			_ = c.SendStatus(http.StatusInternalServerError)
		}
	}
	s.record(c, time.Since(start))
	return nil
}

// record writes the access log line and the metrics of one request.
func (s *Service) record(c *fiber.Ctx, elapsed time.Duration) {
	status := c.Response().StatusCode()
	route, _ := c.Locals(routeKey).(string)
	if route == "" { // rejected before routing (401, 429, 413) or no such route
		route = "unmatched"
		if strings.HasPrefix(c.Path(), APIPrefix+"/") {
			route = APIPrefix + "/*"
		}
	}
	s.metrics.requests.WithLabelValues(route, c.Method(), strconv.Itoa(status)).Inc()
	s.metrics.duration.WithLabelValues(route, c.Method()).Observe(elapsed.Seconds())
	s.log.Info("http request",
		"method", c.Method(),
		"path", c.Path(),
		"route", route,
		"status", status,
		"duration_ms", float64(elapsed.Microseconds())/1000,
		"client", c.IP(),
		"bytes", len(c.Response().Body()),
	)
}

// guard rate-limits and authenticates /api/v1/lb. The client is the key
// when one matches, otherwise the IP, and requests with a wrong key spend
// their IP's tokens too, which throttles key guessing.
func (s *Service) guard(c *fiber.Ctx) error {
	id, authed := "", false
	auth := c.Get(fiber.HeaderAuthorization)
	if s.keys.enabled() {
		id, authed = s.keys.match(auth)
	}
	if !authed {
		id = "ip:" + c.IP()
	}
	if ok, wait := s.limiter.allow(id, time.Now()); !ok {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(retryAfterSeconds(wait)))
		return &model.Error{Status: http.StatusTooManyRequests, Code: "rate_limited", Message: "too many requests, retry later"}
	}
	if s.keys.enabled() && !authed {
		if auth == "" {
			return errNoCredentials
		}
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="mrlb", error="invalid_token"`)
		return errBadCredentials
	}
	return c.Next()
}
