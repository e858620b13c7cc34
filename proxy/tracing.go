package proxy

import (
	"context"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"nanogate/telemetry"
)

// startSpan starts the request's span under the client's trace (its
// traceparent), returning rctx carrying it: the upstream attempts are its
// children and pass the trace on. A no-op without trace export.
func (s *Server) startSpan(ctx *fasthttp.RequestCtx, rctx context.Context, l *reqLog, name string) context.Context {
	if !telemetry.Enabled() {
		return rctx
	}
	rctx = telemetry.Extract(rctx, &ctx.Request.Header)
	rctx, l.span = telemetry.Tracer().Start(rctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("nanogate.request_id", l.id)))
	return rctx
}

// endSpan closes the request's span with what the request was: the
// OpenTelemetry GenAI attributes, who asked (key name and team, never the
// secret), who served, the images and the cost.
func (s *Server) endSpan(l *reqLog) {
	if l.span == nil {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.String("gen_ai.operation.name", "chat"),
		attribute.String("gen_ai.request.model", l.model),
		attribute.Int64("gen_ai.usage.input_tokens", l.usage.PromptTokens),
		attribute.Int64("gen_ai.usage.output_tokens", l.usage.CompletionTokens),
		attribute.Int("http.response.status_code", l.status),
		attribute.String("nanogate.provider", l.served.Provider),
		attribute.Int("nanogate.attempts", l.served.Attempts),
		attribute.Int64("nanogate.images", l.usage.Images),
		attribute.Float64("nanogate.cost_usd", float64(l.cost)/1e6),
	}
	if l.size != "" {
		attrs = append(attrs, attribute.String("nanogate.image_size", l.size))
	}
	if l.caller != nil {
		attrs = append(attrs, attribute.String("nanogate.key", l.caller.Name), attribute.String("nanogate.team", l.caller.Team))
	}
	l.span.SetAttributes(attrs...)
	if l.status >= 500 {
		l.span.SetStatus(codes.Error, l.errCode)
	}
	l.span.End()
	l.span = nil
}
