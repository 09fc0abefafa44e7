/**
 * D2, guessed IDs, on the SQLite store (issue 12 "Tests"): the test is in test/hostile-floods.ts,
 * which also runs it on Redis (test/hostile-guesses-redis.test.ts) and PostgreSQL
 * (test/hostile-guesses-postgres.test.ts).
 */
import { guessedIdFlood } from './hostile-floods.ts';

guessedIdFlood('sqlite');
