// Many lb instances agree, maglev: three daemons from the same config, the same runtime-added backends
// applied in a different order on each, 50,000 keys (the other 50,000 of the 100,000 go through the
// other hash algorithm's file) each sent through all three; every key must land on the same backend
// everywhere (test/helpers/agree.ts).

import t from 'tap';
import { instancesAgree } from './helpers/agree.js';

t.test('three lb instances send every one of 50,000 keys (keys 50,000-99,999 of 100,000) to the same backend (maglev)', (t) => instancesAgree(t, 'maglev', 50000));
