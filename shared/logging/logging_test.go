package logging_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mrlb/mrlb/shared/logging"
)

func TestNewTo(t *testing.T) {
	prev := slog.Default()
	t.Cleanup(func() { slog.SetDefault(prev) })

	var buf bytes.Buffer
	log := logging.NewTo(&buf, "router", slog.LevelInfo)
	log.Debug("hidden")
	log.Info("hello", "k", 1)
	slog.Warn("through the default")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, buf.String())
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &m))
	assert.Equal(t, "hello", m["msg"])
	assert.Equal(t, "INFO", m["level"])
	assert.Equal(t, "router", m["service"])
	assert.Equal(t, 1.0, m["k"])
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &m))
	assert.Equal(t, "router", m["service"], "the logger is the process default")
}

func TestDiscard(t *testing.T) {
	logging.Discard().Error("nothing")
}
