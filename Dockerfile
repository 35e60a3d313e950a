# Build: docker build -t second-read-gateway .
# Run:   docker run -p 11112:11112 -p 2575:2575 -p 8080:8080 -v gw-data:/app/data second-read-gateway
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 compiles its native addon when no prebuilt binary can be fetched.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production TZ=UTC \
    GATEWAY_DICOM_HOST=0.0.0.0 GATEWAY_HL7_HOST=0.0.0.0 GATEWAY_HTTP_HOST=0.0.0.0
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
RUN mkdir -p /app/data && chown -R node:node /app/data
USER node
VOLUME ["/app/data"]
EXPOSE 11112 2575 8080
STOPSIGNAL SIGTERM
CMD ["node", "dist/main.js"]
