/**
 * The loss curve of a run as an SVG picture: a Vega-Lite line chart (loss
 * per optimiser step, learning rate on a second axis) rendered headless by
 * Vega. Imported lazily so the CLI starts without loading Vega.
 *
 *   lossCurveSvg(points)   SVG text
 */
export interface CurvePoint {
  step: number;
  loss: number;
  lr: number;
}

export async function lossCurveSvg(
  points: readonly CurvePoint[],
  title = 'training loss',
): Promise<string> {
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 560,
    height: 280,
    data: { values: points.map((p) => ({ step: p.step, loss: p.loss, lr: p.lr })) },
    encoding: { x: { field: 'step', type: 'quantitative', title: 'optimiser step' } },
    layer: [
      {
        mark: { type: 'line', point: points.length <= 50, color: '#1f77b4' },
        encoding: {
          y: { field: 'loss', type: 'quantitative', title: 'loss', scale: { zero: false } },
        },
      },
      {
        mark: { type: 'line', strokeDash: [4, 3], color: '#ff7f0e' },
        encoding: {
          y: { field: 'lr', type: 'quantitative', title: 'learning rate' },
        },
      },
    ],
    resolve: { scale: { y: 'independent' } },
    config: { background: 'white' },
  };
  const compiled = vl.compile(spec as Parameters<typeof vl.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
