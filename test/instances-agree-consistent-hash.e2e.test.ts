// Many lb instances agree, consistent-hash: three daemons from the same config, the same runtime-added backends
// applied in a different order on each, 100,000 keys each sent through all three; every key must land on
// the same backend everywhere (test/helpers/agree.ts).

import t from 'tap';
import { instancesAgree } from './helpers/agree.js';

t.test('three lb instances send every one of 100,000 keys to the same backend (consistent-hash)', (t) => instancesAgree(t, 'consistent-hash'));
