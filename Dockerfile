# syntax=docker/dockerfile:1
#
# sidecache container image: a static Go binary on distroless, as UID 65532.
#
#   docker build --build-arg VERSION="$(git describe --always --dirty)" -t sidecache .
#
# The image listens for Redis clients on 127.0.0.1:6379 (the default: a
# sidecar serves its own pod) and serves /metrics, /healthz and /readyz on
# 0.0.0.0:9121 for the kubelet and Prometheus. Every flag can be given as an
# argument or as a SIDECACHE_<FLAG> environment variable.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sidecache ./cmd/sidecache

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidecache /sidecache
USER 65532:65532
ENV SIDECACHE_ADMIN_LISTEN=0.0.0.0:9121
EXPOSE 9121
ENTRYPOINT ["/sidecache"]
