// AudioWorklet: microphone Float32 samples → 16 kHz mono PCM16 (little-endian) chunks of ~100 ms.
// Runs on the audio thread. `sampleRate` is the AudioContext's rate; when it is not 16 kHz (a
// browser that would not open a 16 kHz context), each output sample is the average of the input
// samples it covers: a box low-pass and decimation in one step.
// The page posts "flush" to get the partial chunk; that last message carries `last: true`.
// An Int16Array is in the platform's byte order: little-endian on every browser platform.
"use strict";

const TARGET_RATE = 16000;
const CHUNK = 1600;  // samples: 100 ms, 3200 bytes

class PcmRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE;  // input samples per output sample
    this.position = 0;  // input samples gathered toward the next output sample
    this.sum = 0;
    this.count = 0;
    this.chunk = new Int16Array(CHUNK);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.post(true);
    };
  }

  post(last) {
    const pcm = this.chunk.slice(0, this.filled);
    this.port.postMessage({ pcm: pcm.buffer, last }, [pcm.buffer]);
    this.filled = 0;
  }

  push(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === CHUNK) this.post(false);
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];  // mono: the first channel only
    if (!channel) return true;
    if (this.step === 1) {
      for (let i = 0; i < channel.length; i++) this.push(channel[i]);
      return true;
    }
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      this.count += 1;
      this.position += 1;
      if (this.position >= this.step) {
        const value = this.sum / this.count;
        while (this.position >= this.step) {  // more than once only below 16 kHz (sample and hold)
          this.push(value);
          this.position -= this.step;
        }
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-recorder", PcmRecorder);
