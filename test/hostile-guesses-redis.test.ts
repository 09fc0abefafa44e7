/**
 * D2, guessed IDs, on the Redis store (issue 12 "Tests"): see test/hostile-floods.ts. Skipped
 * with the reason when no Redis answers here; fails on CI.
 */
import { guessedIdFlood } from './hostile-floods.ts';

guessedIdFlood('redis');
