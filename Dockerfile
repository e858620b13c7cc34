# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a distroless base, running as a
# non-root user. Build: docker build -t nanogate .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/nanogate . \
 && mkdir -p /out/state/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nanogate /usr/local/bin/nanogate
COPY --from=build --chown=65532:65532 /out/state /var/lib/nanogate
COPY config.yaml /etc/nanogate/config.yaml
# Relative paths in the config (data/...) land in the writable state dir.
WORKDIR /var/lib/nanogate
USER 65532:65532
ENV NANOGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nanogate"]
CMD ["-config", "/etc/nanogate/config.yaml"]
