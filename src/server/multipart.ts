/**
 * Multipart forms read whole into memory under the server's limits. Busboy's
 * own parse failures (truncated or malformed bodies) carry no status, so they
 * are turned into a 400 here instead of surfacing as a 500.
 */
import type { FastifyRequest } from 'fastify';
import { RequestError } from './errors.js';
import type { Body } from './params.js';

export interface UploadedFile {
  field: string;
  filename: string;
  mimetype: string;
  data: Buffer;
}

export interface Form {
  fields: Body;
  files: Map<string, UploadedFile>;
}

/** Reads a multipart/form-data request. `fileFields` lists the accepted file fields. */
export async function readForm(
  req: FastifyRequest,
  fileFields: readonly string[],
  maxFieldChars: number,
): Promise<Form> {
  if (!req.isMultipart()) {
    throw new RequestError(
      'this endpoint takes multipart/form-data (an "image" file part and text fields)',
      'E_MEDIA_TYPE',
      415,
    );
  }
  const fields: Body = {};
  const files = new Map<string, UploadedFile>();
  try {
    for await (const part of req.parts()) {
      // OpenAI clients send image[] for lists; the first is the image, the second a reference.
      let name = part.fieldname;
      if (name === 'image[]') name = files.has('image') ? 'ref_image' : 'image';
      if (part.type === 'file') {
        if (!fileFields.includes(name)) {
          part.file.resume();
          throw new RequestError(
            `unexpected file field "${part.fieldname}" (accepted: ${fileFields.join(', ')})`,
            'E_MULTIPART',
            400,
            part.fieldname,
          );
        }
        if (files.has(name))
          throw new RequestError(`file field "${name}" sent twice`, 'E_MULTIPART', 400, name);
        const data = await part.toBuffer();
        if (part.file.truncated)
          throw new RequestError(
            `${name}: file is larger than the upload limit`,
            'E_TOO_LARGE',
            413,
            name,
          );
        files.set(name, { field: name, filename: part.filename, mimetype: part.mimetype, data });
      } else {
        if (part.valueTruncated)
          throw new RequestError(
            `${name}: longer than ${maxFieldChars} characters`,
            'E_LIMIT',
            413,
            name,
          );
        if (name in fields)
          throw new RequestError(`field "${name}" sent twice`, 'E_MULTIPART', 400, name);
        fields[name] = typeof part.value === 'string' ? part.value : String(part.value);
      }
    }
  } catch (e) {
    if (e instanceof RequestError) throw e;
    const sc = (e as { statusCode?: number }).statusCode;
    if (typeof sc === 'number' && sc < 500) throw e;
    throw new RequestError(`malformed multipart body: ${(e as Error).message}`, 'E_MULTIPART', 400);
  }
  return { fields, files };
}
