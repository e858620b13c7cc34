// Package telemetry exports traces with OpenTelemetry: one span per request
// and one per upstream attempt, joined to the client's trace (W3C
// traceparent) and passed on to the upstream, so that a platform's traces
// show the gateway between its application and Google. It is configured by
// OpenTelemetry's standard environment variables and is off unless an OTLP
// endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); the exporter speaks OTLP/HTTP.
package telemetry

import (
	"context"
	"os"
	"sync"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Tracer starts nanogate's spans; a no-op until Setup installs a provider.
func Tracer() trace.Tracer { return otel.Tracer("nanogate") }

var propagator = propagation.TraceContext{}

// Enabled reports whether the environment asks for trace export. It is read
// once: requests ask on every call, and the environment does not change.
func Enabled() bool { return enabled() }

var enabled = sync.OnceValue(func() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
})

// Setup installs the OTLP/HTTP exporter when Enabled, and returns the
// function that flushes and stops it (a no-op otherwise).
func Setup(ctx context.Context) (shutdown func(context.Context) error, err error) {
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(attribute.String("service.name", serviceName()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	return tp.Shutdown, nil
}

func serviceName() string {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return "nanogate"
}

// headerCarrier adapts fasthttp's request headers to the propagator.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c headerCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c headerCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}

// Extract returns ctx joined to the trace the client's traceparent names.
func Extract(ctx context.Context, h *fasthttp.RequestHeader) context.Context {
	return propagator.Extract(ctx, headerCarrier{h})
}

// Inject writes the traceparent of ctx's span into an upstream request.
func Inject(ctx context.Context, h *fasthttp.RequestHeader) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, headerCarrier{h})
	}
}

// Span starts a child span of ctx named name, and returns the context that
// carries it and the function that ends it (recording err, if any). Without
// trace export it starts nothing and costs nothing.
func Span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, func(err error)) {
	if !Enabled() {
		return ctx, func(error) {}
	}
	ctx, span := Tracer().Start(ctx, name, trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
