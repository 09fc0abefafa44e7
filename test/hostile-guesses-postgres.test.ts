/**
 * D2, guessed IDs, on the PostgreSQL store (issue 12 "Tests"): see test/hostile-floods.ts. Skipped
 * with the reason when no PostgreSQL answers here; fails on CI.
 */
import { guessedIdFlood } from './hostile-floods.ts';

guessedIdFlood('postgres');
