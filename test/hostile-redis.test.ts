/**
 * D1, 100,000 cookieless requests from one source beside a proven user, on the Redis store
 * (issue 12 "Tests"): see test/hostile-floods.ts. Skipped with the reason when no Redis
 * answers here; fails on CI.
 */
import { oneSourceFlood } from './hostile-floods.ts';

oneSourceFlood('redis');
