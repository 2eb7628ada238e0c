package apigw

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/version"
)

// Limits of the list endpoints.
const (
	// DefaultHistoryLimit is the history length when ?limit is absent.
	DefaultHistoryLimit = 100
	// MaxHistoryLimit is the largest ?limit accepted.
	MaxHistoryLimit = 1000
	// RecentFailoverEvents is how many failover events the status lists.
	RecentFailoverEvents = 50
)

// Defaults reported when the owning service has not written its document yet.
var (
	defaultStrategy = model.StrategyConfig{Strategy: model.StrategyRoundRobin, Parameters: json.RawMessage("{}")}
	defaultFailover = model.FailoverSettings{Enabled: true, Threshold: 0.5}
)

// natsCtx bounds one NATS interaction of a request by NATS_REQUEST_TIMEOUT,
// so a NATS outage is a 503, never a hang.
func (s *Service) natsCtx(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.UserContext(), s.cfg.RequestTimeout.D())
}

// command sends a command to the owning service; its typed errors (and 503
// for no responders or timeouts) pass through to the error mapper.
func (s *Service) command(c *fiber.Ctx, subject string, in, out any) error {
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	return bus.Request(ctx, s.nc, subject, in, out)
}

// regionParam reads and validates a region name from the path.
func regionParam(c *fiber.Ctx, name string) (string, error) {
	raw := c.Params(name)
	if r, err := url.PathUnescape(raw); err == nil {
		raw = r
	}
	if err := model.ValidateRegionName(raw); err != nil {
		return "", err
	}
	return raw, nil
}

type statusResponse struct {
	Strategy        string             `json:"strategy"`
	Parameters      json.RawMessage    `json:"parameters"`
	FailoverEnabled bool               `json:"failover_enabled"`
	Regions         regionCounts       `json:"regions"`
	Routers         []model.RouterInfo `json:"routers"`
	Version         string             `json:"version"`
}

type regionCounts struct {
	Total      int `json:"total"`
	Healthy    int `json:"healthy"`
	InRotation int `json:"in_rotation"`
}

func (s *Service) getStatus(c *fiber.Ctx) error {
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	var (
		st         regionState
		strategy   model.StrategyConfig
		strategyOK bool
		fo         model.FailoverSettings
		foOK       bool
		routers    map[string]model.RouterInfo
		wg         sync.WaitGroup
		errs       = make([]error, 4)
	)
	wg.Go(func() { st, errs[0] = s.store.loadState(ctx) })
	wg.Go(func() {
		strategy, strategyOK, errs[1] = getJSON[model.StrategyConfig](ctx, s.store, bus.BucketConfig, bus.KeyStrategy)
	})
	wg.Go(func() {
		fo, foOK, errs[2] = getJSON[model.FailoverSettings](ctx, s.store, bus.BucketConfig, bus.KeyFailoverSettings)
	})
	wg.Go(func() { routers, errs[3] = allJSON[model.RouterInfo](ctx, s.store, bus.BucketRouters) })
	wg.Wait()
	if err := firstErr(errs...); err != nil {
		return err
	}
	if !strategyOK {
		strategy = defaultStrategy
	}
	if !foOK {
		fo = defaultFailover
	}
	resp := statusResponse{
		Strategy:        strategy.Strategy,
		Parameters:      nonNullObject(strategy.Parameters),
		FailoverEnabled: fo.Enabled,
		Routers:         sortedValues(routers),
		Version:         version.Version,
	}
	slices.SortFunc(resp.Routers, byID)
	for _, v := range st.views(s.cfg.HealthPath) {
		resp.Regions.Total++
		if v.Status == model.StatusHealthy {
			resp.Regions.Healthy++
		}
		if v.InRotation {
			resp.Regions.InRotation++
		}
	}
	return c.JSON(resp)
}

// nonNullObject keeps "parameters" an object even if a writer stored null.
func nonNullObject(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage("{}")
	}
	return raw
}

func (s *Service) putStrategy(c *fiber.Ctx) error {
	var req model.SetStrategyRequest
	if err := decodeStrict(c.Body(), &req, false); err != nil {
		return err
	}
	var out model.StrategyConfig
	if err := s.command(c, bus.SubjectCmdConfigStrategySet, req, &out); err != nil {
		return err
	}
	out.Parameters = nonNullObject(out.Parameters)
	return c.JSON(out)
}

func (s *Service) listRegions(c *fiber.Ctx) error {
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	st, err := s.store.loadState(ctx)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"regions": st.views(s.cfg.HealthPath)})
}

func (s *Service) getRegion(c *fiber.Ctx) error {
	name, err := regionParam(c, "region")
	if err != nil {
		return err
	}
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	v, found, err := s.store.loadRegion(ctx, name)
	if err != nil {
		return err
	}
	if !found {
		return model.NotFound(name)
	}
	return c.JSON(v)
}

func (s *Service) addRegion(c *fiber.Ctx) error {
	var req model.AddRegionRequest
	if err := decodeStrict(c.Body(), &req, false); err != nil {
		return err
	}
	var stored model.Region
	if err := s.command(c, bus.SubjectCmdConfigRegionAdd, req, &stored); err != nil {
		return err
	}
	c.Location(APIPrefix + "/regions/" + stored.Region)
	return c.Status(http.StatusCreated).JSON(s.viewAfterWrite(c, stored))
}

func (s *Service) updateRegion(c *fiber.Ctx) error {
	name, err := regionParam(c, "region")
	if err != nil {
		return err
	}
	var req model.UpdateRegionRequest
	if err := decodeStrict(c.Body(), &req, false); err != nil {
		return err
	}
	if req.Region != "" && req.Region != name {
		return model.Invalid("region_mismatch", "body region %q does not match the path region %q", req.Region, name)
	}
	req.Region = name
	var stored model.Region
	if err := s.command(c, bus.SubjectCmdConfigRegionUpdate, req, &stored); err != nil {
		return err
	}
	return c.JSON(s.viewAfterWrite(c, stored))
}

// viewAfterWrite joins a just-written region with its health and failover.
// The write has succeeded, so a failed read degrades the view (status
// unknown) instead of failing the request.
func (s *Service) viewAfterWrite(c *fiber.Ctx, r model.Region) model.RegionView {
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	v, _, err := s.store.loadRegionWith(ctx, r.Region, &r)
	if err != nil {
		s.log.Warn("region written but its state could not be read", "region", r.Region, "err", err)
		return model.NewRegionView(r, nil, nil, s.cfg.HealthPath)
	}
	return v
}

func (s *Service) removeRegion(c *fiber.Ctx) error {
	name, err := regionParam(c, "region")
	if err != nil {
		return err
	}
	if err := s.command(c, bus.SubjectCmdConfigRegionRemove, model.RemoveRegionRequest{Region: name}, nil); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (s *Service) checkHealth(c *fiber.Ctx) error {
	var req model.HealthCheckRequest
	if err := decodeStrict(c.Body(), &req, true); err != nil {
		return err
	}
	if req.Region != "" {
		if err := model.ValidateRegionName(req.Region); err != nil {
			return err
		}
		var out model.CheckResult
		if err := s.command(c, bus.SubjectCmdHealthCheck, req, &out); err != nil {
			return err
		}
		return c.JSON(out)
	}
	var out model.HealthCheckAllResponse
	if err := s.command(c, bus.SubjectCmdHealthCheck, req, &out); err != nil {
		return err
	}
	if out.Results == nil {
		out.Results = []model.CheckResult{}
	}
	return c.JSON(out)
}

func (s *Service) healthHistory(c *fiber.Ctx) error {
	region := c.Query("region")
	if err := model.ValidateRegionName(region); err != nil {
		return err
	}
	limit := DefaultHistoryLimit
	if raw := c.Query("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > MaxHistoryLimit {
			return model.Invalid("invalid_limit", "limit must be a whole number from 1 to %d", MaxHistoryLimit)
		}
		limit = n
	}
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	if _, found, err := getJSON[model.Region](ctx, s.store, bus.BucketRegions, region); err != nil {
		return err
	} else if !found {
		return model.NotFound(region)
	}
	msgs, err := s.store.lastMessages(ctx, bus.StreamHealth, bus.HealthResultsSubject(region), limit)
	if err != nil {
		return err
	}
	history := make([]model.CheckResult, 0, len(msgs))
	for _, data := range msgs {
		var r model.CheckResult
		if err := json.Unmarshal(data, &r); err != nil {
			s.log.Warn("skipping undecodable check result", "region", region, "err", err)
			continue
		}
		history = append(history, r)
	}
	// The stream holds results in the order checks finished; two checks
	// that overlap (a manual one and a scheduled one) can finish in the
	// other order than they started. Newest first is by checked_at.
	slices.SortStableFunc(history, func(a, b model.CheckResult) int { return b.CheckedAt.Compare(a.CheckedAt) })
	return c.JSON(fiber.Map{"region": region, "history": history})
}

func (s *Service) triggerFailover(c *fiber.Ctx) error {
	var req model.FailoverTriggerRequest
	if err := decodeStrict(c.Body(), &req, false); err != nil {
		return err
	}
	for _, name := range []string{req.FromRegion, req.ToRegion} {
		if err := model.ValidateRegionName(name); err != nil {
			return err
		}
	}
	if _, err := req.ParseTTL(); err != nil {
		return err
	}
	var out model.Failover
	if err := s.command(c, bus.SubjectCmdFailoverTrigger, req, &out); err != nil {
		return err
	}
	return c.JSON(out)
}

func (s *Service) clearFailover(c *fiber.Ctx) error {
	name, err := regionParam(c, "from_region")
	if err != nil {
		return err
	}
	if err := s.command(c, bus.SubjectCmdFailoverClear, model.FailoverClearRequest{FromRegion: name}, nil); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

type failoverStatusResponse struct {
	Enabled   bool             `json:"enabled"`
	Threshold float64          `json:"threshold"`
	Active    []model.Failover `json:"active"`
	Recent    []model.Event    `json:"recent"`
}

func (s *Service) failoverStatus(c *fiber.Ctx) error {
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	var (
		settings model.FailoverSettings
		found    bool
		active   map[string]model.Failover
		recent   [][]byte
		wg       sync.WaitGroup
		errs     = make([]error, 3)
	)
	wg.Go(func() {
		settings, found, errs[0] = getJSON[model.FailoverSettings](ctx, s.store, bus.BucketConfig, bus.KeyFailoverSettings)
	})
	wg.Go(func() { active, errs[1] = allJSON[model.Failover](ctx, s.store, bus.BucketFailover) })
	wg.Go(func() {
		recent, errs[2] = s.store.lastMessages(ctx, bus.StreamEvents, bus.SubjectEventsFailoverAll, RecentFailoverEvents)
	})
	wg.Wait()
	if err := firstErr(errs...); err != nil {
		return err
	}
	if !found {
		settings = defaultFailover
	}
	resp := failoverStatusResponse{
		Enabled:   settings.Enabled,
		Threshold: settings.Threshold,
		Active:    sortedValues(active),
		Recent:    make([]model.Event, 0, len(recent)),
	}
	for _, data := range recent {
		var ev model.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			s.log.Warn("skipping undecodable failover event", "err", err)
			continue
		}
		resp.Recent = append(resp.Recent, ev)
	}
	return c.JSON(resp)
}

// listCertificates merges what the live routers' HTTPS listeners serve
// (from their lb_routers entries): one row per certificate, however many
// routers serve it.
func (s *Service) listCertificates(c *fiber.Ctx) error {
	ctx, cancel := s.natsCtx(c)
	defer cancel()
	routers, err := allJSON[model.RouterInfo](ctx, s.store, bus.BucketRouters)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	certs := []model.CertInfo{}
	for _, r := range sortedValues(routers) {
		for _, ci := range r.Certificates {
			key := strings.Join(ci.Names, ",") + "|" + ci.Issuer + "|" + ci.NotAfter.UTC().Format(time.RFC3339Nano) + "|" + ci.Source
			if !seen[key] {
				seen[key] = true
				certs = append(certs, ci)
			}
		}
	}
	slices.SortFunc(certs, func(a, b model.CertInfo) int {
		return strings.Compare(strings.Join(a.Names, ","), strings.Join(b.Names, ","))
	})
	return c.JSON(fiber.Map{"certificates": certs})
}
