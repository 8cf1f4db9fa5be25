import * as Sentry from "@sentry/react";

import { apiTarget, config } from "./config";

/**
 * Sentry with browser tracing. Only API calls carry trace context, and they carry the W3C
 * `traceparent` as well as Sentry's own headers, so an OpenTelemetry backend continues the
 * browser's trace (and its sampling decision) when it trusts this page's origin.
 */
export function initTelemetry(): void {
  Sentry.init({
    dsn: config.sentryDsn || undefined,
    integrations: [Sentry.browserTracingIntegration()],
    tracesSampleRate: config.tracesSampleRate,
    tracePropagationTargets: [apiTarget],
    propagateTraceparent: true,
    // The GW2 API key travels in a request header: no headers, cookies or user fields leave the page.
    dataCollection: { httpHeaders: false, cookies: false, userInfo: false },
  });
}

/**
 * One user action, one trace: a new trace (with its own sampling decision) whose root span
 * is the action; the fetch spans inside it are the parents of the backend's server spans.
 * A failure is reported while the action's span is active, so the Sentry event carries the
 * same trace id as the backend request that failed.
 */
export function userAction<T>(name: string, work: () => Promise<T>): Promise<T> {
  return Sentry.startNewTrace(() =>
    Sentry.startSpan({ name, op: "ui.action", forceTransaction: true }, async () => {
      try {
        return await work();
      } catch (error) {
        Sentry.captureException(error);
        throw error;
      }
    }),
  );
}
