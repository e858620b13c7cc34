package batch

import (
	"context"

	"nanogate/internal/webhook"
)

// WebhookOptions tune deliveries (internal/webhook's options).
type WebhookOptions = webhook.Options

// Webhooks delivers batch events through the gateway's signed sender: a
// POST of the batch object, signed with the hex SHA-256 of the key that
// created the batch, retried on failure.
type Webhooks struct {
	s *webhook.Sender
}

// NewWebhooks returns a sender.
func NewWebhooks(o WebhookOptions) *Webhooks {
	return &Webhooks{s: webhook.New(o)}
}

// Send delivers body to url in the background. Besides the signature,
// x-nanogate-event (batch.completed, batch.failed, batch.expired,
// batch.cancelled) and x-nanogate-event-id, the batch's id is in
// x-nanogate-batch, where receivers of batch events have always read it.
func (w *Webhooks) Send(url string, secret []byte, event, batchID string, body []byte) {
	w.s.Send(url, secret, webhook.Event{Kind: event, ID: batchID, Header: "x-nanogate-batch", Value: batchID, Body: body})
}

// Close waits for deliveries in flight until ctx ends, then abandons them.
func (w *Webhooks) Close(ctx context.Context) { w.s.Close(ctx) }
